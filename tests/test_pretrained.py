"""Pretrained sources: a local folder or a hub id, never a file or a missing local path silently treated as a hub id."""

from __future__ import annotations

import pytest

from avatar_gen.errors import UserError
from avatar_gen.utils.pretrained import loading_error, resolve_pretrained


def test_existing_folder_is_local(tmp_path):
    source = resolve_pretrained(tmp_path, "LTX-Video VAE")
    assert source.is_local and source.source == str(tmp_path)


@pytest.mark.parametrize("name", ["Lightricks/LTX-Video", "facebook/wav2vec2-base-960h", "gpt2"])
def test_hub_ids_are_not_local(name):
    source = resolve_pretrained(name, "model")
    assert not source.is_local and source.source == name


@pytest.mark.parametrize("name", ["./missing", "/no/such/dir", "~/no-such-model-folder", "a/b/c"])
def test_missing_local_paths_are_clear_errors(name):
    with pytest.raises(UserError, match=f"wav2vec2 model folder not found: {name}"):
        resolve_pretrained(name, "wav2vec2 model")


def test_a_file_is_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(UserError, match="must be a folder or a hub id, got the file"):
        resolve_pretrained(weights, "LTX-Video VAE")


def test_loading_error_names_what_and_where():
    error = loading_error(OSError("We couldn't connect to the hub\nmore detail"), resolve_pretrained("org/model", "x"),
                          "LTX-Video VAE", revision="main")
    message = str(error)
    assert "cannot load the LTX-Video VAE from Hugging Face hub id 'org/model' (revision main)" in message
    assert "offline?" in message and "\n" not in message
