"""`charlstm push`, `charlstm push-space` and `charlstm model-card`: their options, and thin callers of
`charlstm.hub`.
"""

from pathlib import Path


def add_commands(subparsers) -> None:
    push = subparsers.add_parser(
        "push",
        help="publish a saved generator or detector to the Hugging Face Hub",
        description="Publish a saved generator or detector to the Hugging Face Hub: weights, tokenizer, code files, "
        "logs and curves, a model card with the run's figures and, for a generator, an Inference Endpoints "
        "handler.py. The token comes from HF_TOKEN or `hf auth login`.",
    )
    push.add_argument("model_dir", help="a directory written by `charlstm train` or `charlstm detector train`")
    push.add_argument("--repo-id", required=True, help="NAMESPACE/NAME of the model repo (created if needed)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to push to (created from main if needed; default: main)")
    push.add_argument("--commit-message", help="message of the commit that uploads the files")
    push.add_argument("--dataset-id", help="Hub dataset id for the card's metadata, when the training data was local")
    push.add_argument("--detector-id", help="Hub id of the matching detector, linked from the card")
    push.set_defaults(func=run_push)

    space = subparsers.add_parser(
        "push-space",
        help="publish the project's Gradio app as a Hugging Face Space",
        description="Publish space/ as a Gradio Space that loads the given models from the Hub (Space variables "
        "MODEL_ID and DETECTOR_ID). Pushing the same thing again changes nothing.",
    )
    space.add_argument("--repo-id", required=True, help="NAMESPACE/NAME of the Space (created if needed)")
    space.add_argument("--model-id", required=True, help="Hub id of the generator the Space loads")
    space.add_argument("--detector-id", help="Hub id of the detector the Space loads (default: none)")
    space.add_argument("--private", action="store_true", help="create the Space private")
    space.add_argument("--space-dir", help="the app's folder (default: the Space that ships with the package)")
    space.add_argument("--commit-message", help="message of the commit")
    space.set_defaults(func=run_push_space)

    card = subparsers.add_parser(
        "model-card",
        help="render the Hub model card (README.md) of a saved generator or detector",
        description="Render the model card of a saved generator or detector from its training log. Prints it, or "
        "writes MODEL_DIR/README.md with --write.",
    )
    card.add_argument("model_dir", help="a saved model or detector directory")
    card.add_argument("--repo-id", help="the Hub id the card's loading instructions name (default: a placeholder)")
    card.add_argument("--revision", help="the commit id the loading instructions pin (default: a placeholder)")
    card.add_argument("--dataset-id", help="Hub dataset id for the metadata, when the training data was local")
    card.add_argument("--detector-id", help="Hub id of the detector to point to from the section on misuse")
    card.add_argument("--write", action="store_true", help="write MODEL_DIR/README.md instead of printing")
    card.set_defaults(func=run_model_card)


def run_push(args) -> int:
    from ..hub.push import push_to_hub

    result = push_to_hub(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
                         commit_message=args.commit_message, dataset_id=args.dataset_id, detector_id=args.detector_id)
    # One commit id: the one to pin. The model card's own commit comes after it and changes only README.md.
    print(f"pushed {args.model_dir} to {result.url}: load it with revision=\"{result.pinned_revision}\" and "
          "trust_remote_code=True")
    return 0


def run_push_space(args) -> int:
    from ..hub.push import push_space

    result = push_space(args.repo_id, args.model_id, detector_id=args.detector_id, private=args.private,
                        space_dir=args.space_dir, commit_message=args.commit_message)
    print(f"pushed the Space to {result.url} (head {result.commit})")
    return 0


def run_model_card(args) -> int:
    from ..hub.model_card import render_model_card
    from ..runfiles import write_text

    card = render_model_card(args.model_dir, args.repo_id, args.revision, dataset_id=args.dataset_id,
                             detector_id=args.detector_id)
    if args.write:
        path = Path(args.model_dir) / "README.md"
        write_text(path, card)
        print(f"wrote {path}")
    else:
        print(card)
    return 0
