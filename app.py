"""Web demo: serve a Gradio page that turns a portrait + a line of text (or speech) into a talking video.

    python app.py --checkpoint outputs/demo/run/checkpoints/latest [--pretrained <base>] [--port 7860]

The model is loaded once, then the page is served on 127.0.0.1 (``--host`` to change, ``--share`` for a
public Gradio link) until Ctrl-C or SIGTERM.  See docs/webapp.md.
"""

from __future__ import annotations

import argparse

from avatar_gen.inference.guidance import GUIDANCE_REGIONS
from avatar_gen.utils.cli import add_common_arguments, interrupt_on_sigterm, run_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the avatar generator as a web page (Gradio).")
    parser.add_argument("--checkpoint", required=True,
                        help="training checkpoint: a step_XXXXXX folder, a 'latest' link, or a run folder")
    parser.add_argument("--pretrained", default=None,
                        help="base LTX-Video model for a LoRA checkpoint (default: the one it was trained on)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="compute precision (default: fp32)")
    parser.add_argument("--share", action="store_true", help="also open a public link through Gradio's servers")
    parser.add_argument("--steps", type=int, default=None, help="initial value of the page's denoising steps")
    parser.add_argument("--guidance", type=float, default=None, help="initial value of the page's guidance scale")
    parser.add_argument("--guidance_region", default=None, choices=GUIDANCE_REGIONS,
                        help="initial choice of where the page's audio guidance acts (default: the mouth)")
    parser.add_argument("--start_sigma", type=float, default=None,
                        help="initial value of the page's start noise level (default: inference's)")
    parser.add_argument("--work-dir", default=None,
                        help="folder for example portraits and generated videos (default: a temporary folder, "
                             "removed on exit)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from avatar_gen.inference import AvatarGenerator
        from avatar_gen.webapp import PageDefaults, serve

        initial = {"steps": args.steps, "guidance": args.guidance, "guidance_region": args.guidance_region,
                   "start_sigma": args.start_sigma}
        defaults = PageDefaults(**{name: value for name, value in initial.items() if value is not None})
        generator = AvatarGenerator.load(args.checkpoint, pretrained=args.pretrained, device=args.device,
                                         dtype=args.dtype)
        with interrupt_on_sigterm():  # Gradio stops cleanly on KeyboardInterrupt
            serve(generator, host=args.host, port=args.port, share=args.share, work_dir=args.work_dir,
                  defaults=defaults)
        return 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
