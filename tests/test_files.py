"""media.files: what an -i names and what each output is called, the same for upscale, video and batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from srdeploy.runtime.media import ffmpeg as ff
from srdeploy.runtime.media.files import (IMAGE_EXTS, VIDEO_EXTS, collect, output_paths, output_problem,
                                          plan_outputs)


@pytest.fixture
def tree(tmp_path) -> Path:
    """in/a.png in/b.jpg in/notes.txt in/.hidden.png in/clip.avi in/sub/c.png in/sub/d.mts"""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for name in ("a.png", "b.jpg", "notes.txt", ".hidden.png", "clip.avi", "sub/c.png", "sub/d.mts"):
        (d / name).write_bytes(b"x")
    return d


def _rel(pairs) -> list[str]:
    return [rel.as_posix() for _, rel in pairs]


def test_every_video_extension_read_is_one_ffmpeg_writes():
    assert set(VIDEO_EXTS) == set(ff.CONTAINERS) and not set(VIDEO_EXTS) & set(IMAGE_EXTS)


def test_folders_globs_and_named_files(tree):
    pairs, problems = collect([str(tree)], kinds=("image",))
    assert _rel(pairs) == ["a.png", "b.jpg"] and problems == []  # no video, no text file, no hidden file
    pairs, _ = collect([str(tree)], recursive=True)
    assert _rel(pairs) == ["a.png", "b.jpg", "clip.avi", "sub/c.png", "sub/d.mts"]
    pairs, _ = collect([str(tree / "**" / "*.png")], recursive=True)
    assert _rel(pairs) == ["a.png", "sub/c.png"]  # mirrored below the pattern's folder
    pairs, problems = collect([str(tree / "*.txt"), str(tree / "notes.txt")], kinds=("image",))
    assert _rel(pairs) == ["notes.txt"]  # named directly: taken (it fails by name when read)
    assert problems == [f"{tree / '*.txt'}: no images match this pattern"]
    pairs, problems = collect([str(tree / "clip.avi"), str(tree / "a.png"), str(tree / "a.png")], kinds=("image",))
    assert _rel(pairs) == ["a.png"]  # each file once
    assert problems == [f"{tree / 'clip.avi'}: is a video; upscale it with `srdeploy video -i {tree / 'clip.avi'} "
                        "-o OUT`"]
    (tree / "empty").mkdir()
    _, problems = collect([str(tree / "empty")], recursive=False)  # batch, which has --recursive
    assert problems[0].startswith(f"{tree / 'empty'}: folder contains no images or videos (.png, ")
    assert problems[0].endswith("(pass --recursive for its sub-folders)")
    _, problems = collect([str(tree / "empty")], kinds=("image",))  # upscale, which has not
    assert problems == [f"{tree / 'empty'}: folder contains no images ({', '.join(IMAGE_EXTS)})"]
    _, problems = collect([str(tree / "none.png")])
    assert problems == [f"{tree / 'none.png'}: no such file or folder"]


def test_manifests_list_inputs_relative_to_themselves(tree, tmp_path):
    manifest = tmp_path / "list.txt"
    manifest.write_text("# inputs\nin/a.png\n\nin/sub/d.mts\nin/missing.png\n")
    pairs, problems = collect([str(manifest)], manifests=True)
    assert _rel(pairs) == ["in/a.png", "in/sub/d.mts"]
    assert problems == [f"{manifest}: {tmp_path / 'in/missing.png'}: no such file or folder"]
    empty = tmp_path / "empty.lst"
    empty.write_text("# nothing\n")
    assert collect([str(empty)], manifests=True)[1] == [f"{empty}: manifest lists no inputs"]
    assert _rel(collect([str(manifest)], kinds=("image",))[0]) == ["list.txt"]  # upscale reads no manifests


def test_output_names_and_clashes(tree, tmp_path):
    pairs, _ = collect([str(tree)], recursive=True)
    planned, problems = plan_outputs(pairs, tmp_path / "out", suffix="_x4", ext="webp")
    names = [dst.relative_to(tmp_path / "out").as_posix() for _, dst in planned]
    assert names == ["a_x4.webp", "b_x4.webp", "clip_x4.avi", "sub/c_x4.webp", "sub/d_x4.mts"]  # videos keep theirs
    assert problems == []
    planned, problems = plan_outputs(pairs, tree, ext="png")  # -o the input folder itself
    assert planned == [(tree / "b.jpg", tree / "b.png")] and len(problems) == 4
    assert all("would overwrite the input; choose another -o folder" in p for p in problems)
    inputs, taken = {tree / "a.png"}, {}
    assert output_problem(tree / "b.jpg", tree / "a.png", inputs, taken).endswith(
        "would overwrite an input; choose another -o folder, --suffix or --ext")
    assert output_problem(tree / "b.jpg", tmp_path / "o.png", inputs, taken) is None
    assert "is also the output of" in output_problem(tree / "x.jpg", tmp_path / "o.png", inputs, taken)
    with pytest.raises(ValueError, match="--ext gif: unsupported output format"):
        plan_outputs(pairs, tmp_path, ext="gif")


def test_upscale_output_paths(tree, tmp_path):
    pairs, _ = collect([str(tree / "a.png")], kinds=("image",))
    assert output_paths(pairs, tmp_path / "one.tiff", ext=None, suffix="", single_item=True) == \
        {tree / "a.png": tmp_path / "one.tiff"}
    with pytest.raises(ValueError, match="but --ext says .png"):
        output_paths(pairs, tmp_path / "one.tiff", ext="png", suffix="", single_item=True)
    pairs, _ = collect([str(tree)], kinds=("image",))
    with pytest.raises(ValueError, match="needs exactly one input file"):
        output_paths(pairs, tmp_path / "many.png", ext=None, suffix="", single_item=False)
    assert output_paths(pairs, tmp_path / "o", ext="tif", suffix="_2", single_item=False) == \
        {tree / "a.png": tmp_path / "o" / "a_2.tif", tree / "b.jpg": tmp_path / "o" / "b_2.tif"}


def test_the_output_folder_is_not_an_input(tree):
    """An output folder inside a scanned tree is skipped (a rerun must not take the outputs as inputs);
    where it is the input folder itself, or a file is named directly, the inputs stay."""
    out = tree / "sub"
    pairs, _ = collect([str(tree)], recursive=True, exclude=out)
    assert _rel(pairs) == ["a.png", "b.jpg", "clip.avi"]
    pairs, _ = collect([str(tree / "**" / "*.png")], recursive=True, exclude=out)
    assert _rel(pairs) == ["a.png"]
    pairs, _ = collect([str(tree)], recursive=True, exclude=tree)  # outputs beside the inputs
    assert _rel(pairs) == ["a.png", "b.jpg", "clip.avi", "sub/c.png", "sub/d.mts"]
    pairs, _ = collect([str(out)], exclude=out)
    assert _rel(pairs) == ["c.png", "d.mts"]
    pairs, _ = collect([str(out / "c.png")], exclude=out)
    assert _rel(pairs) == ["c.png"]
