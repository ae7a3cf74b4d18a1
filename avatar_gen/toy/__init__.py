"""The toy world: a small LTX-Video pretrained here on synthetic talking figures (see docs/toy.md).

No machine of this project can download LTX-Video 2B, and tiny random models produce noise, so nothing would show
that the method learns lip sync. The toy world is real except for its size: an ``AutoencoderKLLTXVideo`` and an
``LTXVideoTransformer3DModel`` in diffusers' formats, pretrained on CPU from synthetic close-up clips (the transformer
as an image-to-video base that knows nothing about speech, like the real 2B), saved as an ``LTXImageToVideoPipeline``
folder that the project loads with the same code as the real weights. The real recipe (LoRA on ``attn2`` + audio
projection, ``configs/train-toy.yaml``) is then trained on top and judged on held-out speech, figures and voices.

    python -m avatar_gen.toy pretrain --config configs/toy-pretrain.yaml
"""
