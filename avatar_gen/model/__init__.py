"""The trainable model around LTX-Video: audio projection, LoRA, alignment masks, rectified flow, checkpoints.

Inference and the web demo load a trained model with
:func:`avatar_gen.model.checkpoint.load_avatar_checkpoint`; the trainer builds the same pieces.
"""
