"""`charlstm space`: serve the Gradio Space from an installed package, as `make demo` serves it from a checkout.

The options live here, light, and `space/app.py` takes them from here too, so the two ways in read the same
settings and environment variables.
"""

import os

from .numbers import whole_number

DEFAULT_PORT = 7860


def add_commands(subparsers) -> None:
    space = subparsers.add_parser(
        "space",
        help="serve the Gradio Space (write and score reviews in a browser) on this machine",
        description="Serve the project's Gradio Space: write reviews with the generator, streamed, and score a "
        "review with the detector. Stop it with Ctrl-C.",
    )
    add_space_options(space)
    space.set_defaults(func=run_space)


def add_space_options(parser) -> None:
    """The Space's options. Their defaults come from the environment, which is how a Hub Space passes its
    variables (MODEL_ID, DETECTOR_ID) and how `make demo PORT=8000` passes a port."""
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on (env GRADIO_SERVER_NAME; default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=whole_number(1, 65535),
                        default=os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT,
                        help=f"port to serve on (env PORT or GRADIO_SERVER_PORT; default: {DEFAULT_PORT})")
    parser.add_argument("--model", default=os.environ.get("MODEL_ID"),
                        help="generator: Hub id or directory (env MODEL_ID; default: the bundled one)")
    parser.add_argument("--detector", default=os.environ.get("DETECTOR_ID"),
                        help="detector: Hub id or directory (env DETECTOR_ID; default: the bundled one)")
    parser.add_argument("--fp32", action="store_true", default=os.environ.get("CHARLSTM_FP32", "") not in ("", "0"),
                        help="keep fp32 weights (env CHARLSTM_FP32=1; default: int8 weights, faster on a CPU)")


def run_space(args) -> int:
    from ..hub.space.app import serve

    serve(args)
    return 0
