"""Every user mistake on the command lines of train_main.py (`mhp-train`) and
mhp_keras.serving.predict (`mhp-predict`) ends in one paragraph `error: ...` naming the flag, key or
value, with exit status 2 and no traceback; absl's own flag errors included (absl alone would
exit 1).

These mistakes are found before any training or model loading, so each subprocess is short:
train_main.py reports them before TensorFlow is imported; mhp_keras.serving.predict imports
TensorFlow at start-up and so takes a few seconds each.
"""

import errno
import os

import numpy as np
import pytest
from cli_helpers import predict_command, run, train_main_command
from PIL import Image


def error_paragraph(result) -> str:
    """The one `error:` line of a failed run, after checking the run failed as a user mistake."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    # Nothing after the paragraph: it is the last thing the user sees.
    assert result.stderr.rstrip().endswith(errors[0]), result.stderr[-3000:]
    return errors[0]


def train_error(*args) -> str:
    result = run(train_main_command(*args), timeout=120)
    # These are found before TensorFlow is imported: no TF start-up logs, only the paragraph.
    assert result.stderr.count("\n") == 1, result.stderr[-3000:]
    return error_paragraph(result)


# -- train_main.py: config keys and values --------------------------------------------------------


@pytest.mark.parametrize("config", [[], ["--config=configs/digits.py"]])
def test_misspelt_key_names_the_nearest_valid_key(config):
    message = train_error(*config, "--config.model.hypothesis=8")
    assert "--config.model.hypothesis" in message
    assert "did you mean --config.model.hypotheses?" in message


def test_misspelt_section_names_the_nearest_valid_key():
    message = train_error("--config.modle.hypotheses=8")
    assert "modle.hypotheses" in message and "--config.model.hypotheses" in message


def test_unknown_key_without_a_near_one_lists_its_section():
    message = train_error("--config.model.zzz=1")
    assert "model.zzz" in message and "the keys of model are:" in message
    assert "hypotheses" in message


@pytest.mark.parametrize(
    "flag,expected",
    [
        ("--config.model.hypotheses=abc", ["--config.model.hypotheses=abc", "type int"]),
        ("--config.train.epochs=1.5", ["--config.train.epochs=1.5", "type int"]),
    ],
)
def test_wrong_type_of_value(flag, expected):
    message = train_error(flag)
    assert all(text in message for text in expected), message


def test_override_before_config_file():
    message = train_error("--config.model.hypotheses=3", "--config=configs/digits.py")
    assert "--config.model.hypotheses=3" in message


# -- train_main.py: config files ------------------------------------------------------------------


def test_missing_config_file_lists_the_configs():
    message = train_error("--config=missing.py")
    assert "--config=missing.py does not exist" in message and "digits.py" in message


def test_misspelt_config_file_names_the_nearest():
    message = train_error("--config=configs/digit.py")
    assert "did you mean configs/digits.py?" in message.lower()


@pytest.mark.parametrize(
    "source,expected",
    [
        ("def get_config(:\n    pass\n", "is not valid Python: invalid syntax at line 1"),
        ("X = 1\n", "defines no get_config() function"),
        ("import no_such_module_xyz\n", "ModuleNotFoundError: No module named"),
        ("def get_config():\n    raise RuntimeError('boom')\n", "failed at line 2: RuntimeError"),
        ("def get_config():\n    return {'a': 1}\n", "returned dict; expected an ml_collections"),
    ],
    ids=["syntax_error", "no_get_config", "bad_import", "get_config_raises", "not_a_configdict"],
)
def test_broken_config_file(tmp_path, source, expected):
    path = tmp_path / "my_config.py"
    path.write_text(source)
    message = train_error(f"--config={path}")
    assert f"--config={path}" in message and expected in message, message


def test_config_folder_instead_of_file(tmp_path):
    message = train_error(f"--config={tmp_path}")
    assert f"--config={tmp_path} is a folder" in message


# -- train_main.py: other flags -------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag,expected",
    [
        ("--mode=bogus", "--mode=bogus: value should be one of"),
        ("--strategy=bogus", "--strategy=bogus: value should be one of"),
        ("--seeds=0", "--seeds=0: 0 is not a positive integer"),
        ("--seeds=-1", "--seeds=-1: -1 is not a positive integer"),
        ("--overwrite=maybe", "--overwrite=maybe"),
    ],
)
def test_bad_flag_value(flag, expected):
    assert expected in train_error(flag)


def test_unknown_flag_that_is_a_config_key_suggests_it():
    message = train_error("--hypotheses=3")
    assert "Unknown command line flag 'hypotheses'" in message
    assert "--config.model.hypotheses" in message


def test_unknown_flag_suggests_the_nearest_flag():
    message = train_error("--mod=train")
    assert "Unknown command line flag 'mod'" in message and "mode" in message


def test_positional_arguments():
    assert "unexpected arguments ['train', 'now']" in train_error("train", "now")


def test_uncreatable_workdir_says_why(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    workdir = blocker / "run"  # a folder inside a file cannot exist
    message = train_error(f"--workdir={workdir}")
    assert f"--workdir={workdir}: the folder cannot be created" in message
    assert os.strerror(errno.ENOTDIR) in message


def test_workdir_that_is_a_file(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert f"--workdir={blocker} is a file" in train_error(f"--workdir={blocker}")


# -- mhp_keras.serving.predict -------------------------------------------------------------


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """An image folder, an empty folder, a plain file and a folder that only looks like a model."""
    root = tmp_path_factory.mktemp("predict_errors")
    images = root / "images"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / "a.png")
    (root / "empty").mkdir()
    (root / "a_file").write_text("")
    fake = root / "fake_model" / "1"
    fake.mkdir(parents=True)
    (fake / "saved_model.pb").write_bytes(b"not a SavedModel")
    return {
        "images": str(images),
        "empty": str(root / "empty"),
        "file": str(root / "a_file"),
        "fake": str(root / "fake_model"),
        "out": str(root / "out"),
    }


def predict_error(paths, **flags) -> str:
    """The error for these flags; unnamed flags are valid values, so only the named one is bad."""
    values = {"saved_model": paths["fake"], "input": paths["images"], "output_dir": paths["out"]}
    values.update(flags)
    args = [f"--{k}={v}" for k, v in values.items() if v is not None]
    return error_paragraph(run(predict_command(*args), timeout=300))


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({"batch_size": 0}, "--batch_size=0: 0 is not a positive integer"),
        ({"saved_model": None}, "--saved_model is required"),
        ({"saved_model": "{file}"}, "--saved_model={file} is not a directory"),
        ({"saved_model": "{empty}"}, "--saved_model={empty} holds no saved_model.pb"),
        ({"input": None}, "--input is required"),
        ({"input": "{empty}/nope"}, "--input={empty}/nope does not exist"),
        ({"input": "{empty}"}, "--input={empty} contains no images"),
        ({"output_dir": None}, "--output_dir is required"),
        ({"output_dir": "{file}"}, "--output_dir={file} is a file"),
        ({"output_dir": "{file}/out"}, "--output_dir={file}/out: the folder cannot be created"),
        ({"savedmodel": "x"}, "Unknown command line flag 'savedmodel'. Did you mean: saved_model"),
    ],
    ids=lambda value: (
        "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None
    ),
)
def test_predict_flag_mistakes(paths, flags, expected):
    flags = {k: v.format(**paths) if isinstance(v, str) else v for k, v in flags.items()}
    assert expected.format(**paths) in predict_error(paths, **flags)


def test_predict_saved_model_that_does_not_load(paths):
    message = predict_error(paths)
    assert f"--saved_model={paths['fake']}/1 could not be loaded as a SavedModel" in message


def test_predict_positional_arguments(paths):
    args = [f"--saved_model={paths['fake']}", f"--input={paths['images']}", "extra"]
    message = error_paragraph(run(predict_command(*args), timeout=300))
    assert "unexpected arguments ['extra']" in message


def test_output_folders_are_created_once_by_racing_processes_and_never_taken_for_files(tmp_path):
    # The workers of a multi-worker run create the same new workdir at once; checking for a
    # folder and then for a file once took a folder made in between for a file.
    import threading

    from mhp_keras.cli.exits import ensure_output_dir
    from mhp_keras.errors import UserError

    target, errors = tmp_path / "a" / "run", []

    def create():
        try:
            ensure_output_dir("--workdir", str(target))
        except UserError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=create) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and target.is_dir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match=f"--workdir={a_file} is a file; expected a folder"):
        ensure_output_dir("--workdir", str(a_file))
