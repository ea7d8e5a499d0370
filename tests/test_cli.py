"""The command line starts without the heavy libraries, and its light copies of library constants stay in step."""

import subprocess
import sys

from charlstm.configuration_charlstm import CLASSIFIER_POOLINGS
from charlstm.detection.settings import POOLINGS

HEAVY = ("torch", "transformers", "datasets", "gradio", "matplotlib", "huggingface_hub")

# Every command's --help, as `charlstm` would print it, then which heavy modules the process had loaded.
PROBE = """
import sys
from charlstm.cli import build_parser
parser = build_parser()
for command in sys.argv[1:]:
    try:
        parser.parse_args([*command.split(), "--help"])
    except SystemExit:
        pass
print("heavy:", ",".join(name for name in {heavy!r} if name in sys.modules))
"""


def test_help_of_every_command_loads_no_heavy_library():
    commands = ["", "train", "eval", "generate", "detect", "detector", "detector build-data", "detector train",
                "detector calibrate", "push", "push-space", "model-card", "space"]
    result = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *commands], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: charlstm detector calibrate" in result.stdout
    assert result.stdout.splitlines()[-1] == "heavy: ", result.stdout.splitlines()[-1]


def test_import_charlstm_is_light_and_a_public_name_registers_the_classes():
    probe = (
        "import sys, charlstm; light = not any(name in sys.modules for name in ('torch', 'transformers'));"
        "from transformers import AutoConfig; from charlstm import CharLSTMConfig;"
        "print(light, AutoConfig.for_model('charlstm').__class__ is CharLSTMConfig)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["True", "True"], result.stderr


def test_the_detector_commands_offer_the_poolings_the_config_accepts():
    assert POOLINGS == CLASSIFIER_POOLINGS


def test_inference_imports_neither_training_nor_the_hub_code():
    # What a user of the detector or the generator runs pulls in the model and what reads its input, as
    # transformers' pipelines never import Trainer.
    probe = ("import sys, charlstm.detection.detector, charlstm.generation.sampling;"
             "print([m for m in sys.modules if m.startswith(('charlstm.training', 'charlstm.hub', 'charlstm.cli'))])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_import_charlstm_after_transformers_registers_the_classes():
    probe = ("from transformers import AutoConfig; import charlstm;"
             "print(type(AutoConfig.for_model('charlstm')).__name__)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "CharLSTMConfig", result.stderr
