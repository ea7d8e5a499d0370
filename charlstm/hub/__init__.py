"""Publishing to the Hugging Face Hub: push, push-space, model cards, the Inference Endpoints handler."""
