"""Which source streams each output container keeps, converts or drops (issue 25 item 9).

The join decides every stream before ffmpeg runs, from the container table ``codecs.STREAMS``;
these tests hold that table to docs/video.md ("Streams"), to the promises written out below, and
to the bundled ffmpeg (every entry is muxed and read back). Sources are tiny synthetic files made
with the bundled ffmpeg.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from srdeploy.runtime.media import ffmpeg as ff
from srdeploy.runtime.media.ffmpeg.codecs import CONTAINERS, STREAMS, Holds
from srdeploy.runtime.media.ffmpeg.mux import plan_streams
from srdeploy.runtime.media.ffmpeg.probe import MediaInfo, StreamInfo

from _video import FFMPEG, make, write_copy_model

DOCS = Path(__file__).resolve().parents[1] / "docs" / "video.md"
RATE, FRAMES = 10, 5  # every test source: 5 frames at 10 fps, 16x12


# --------------------------------------------------------------------------- the table and the docs
def table_rows() -> list[str]:
    """docs/video.md's Streams table, one row per muxer, as the code says it."""
    rows = []
    for muxer, h in STREAMS.items():
        exts = " ".join(f"`{e}`" for e, (m, _) in CONTAINERS.items() if m == muxer)
        cells = [exts, " ".join(sorted(h.audio)), h.audio_to, " ".join(sorted(h.text)) or "-",
                 h.text_to or "dropped", " ".join(sorted(h.image)) or "-", " ".join(sorted(h.covers)) or "-",
                 "any" if h.video is None else " ".join(sorted(h.video)), "kept" if h.attachments else "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def test_every_output_container_has_a_row_and_the_docs_show_it():
    assert set(STREAMS) == {muxer for muxer, _ in CONTAINERS.values()}
    text = DOCS.read_text(encoding="utf-8")
    missing = [row for row in table_rows() if row not in text]
    assert not missing, "docs/video.md's Streams table differs from codecs.STREAMS; rows now:\n" + "\n".join(missing)


# --------------------------------------------------------------------------- the decisions
SOURCE = MediaInfo(path=Path("src.mkv"), format="matroska,webm", start=0.0, duration=1.0, video=0, streams=(
    StreamInfo(0, "video", "h264"), StreamInfo(1, "audio", "aac"), StreamInfo(2, "audio", "opus"),
    StreamInfo(3, "audio", "pcm_s16le"), StreamInfo(4, "subtitle", "subrip"), StreamInfo(5, "subtitle", "mov_text"),
    StreamInfo(6, "subtitle", "dvd_subtitle"), StreamInfo(7, "subtitle", "hdmv_pgs_subtitle"),
    StreamInfo(8, "video", "mjpeg", attached_pic=True), StreamInfo(9, "video", "mpeg4"),
    StreamInfo(10, "attachment", "ttf"), StreamInfo(11, "data", "bin_data")))
# Per container: what happens to streams 1-11 ("copy", an encoder, or "drop"), as docs/video.md promises.
C, D = "copy", "drop"
PROMISED = {
    "mp4": [C, C, "aac", "mov_text", C, C, D, C, C, D, D],
    "mov": [C, "aac", C, "mov_text", C, D, D, D, C, D, D],
    "matroska": [C, C, C, C, "srt", C, C, D, C, C, D],
    "webm": ["libopus", C, "libopus", "webvtt", "webvtt", D, D, D, D, D, D],
    "avi": [C, "libmp3lame", C, D, D, D, D, D, C, D, D],
    "flv": [C, "aac", "aac", D, D, D, D, D, D, D, D],
    "mpegts": [C, C, "aac", D, D, D, D, D, D, D, D],
    "mpeg": ["mp2", "mp2", "mp2", D, D, C, D, D, D, D, D],
    "asf": ["wmav2", "wmav2", C, D, D, D, D, D, D, D, D],
}


@pytest.mark.parametrize("container", sorted(PROMISED))
def test_every_stream_kind_is_decided_before_muxing(container):
    plan = plan_streams(SOURCE, container)
    got = [D if s.index in plan.dropped else plan.encode.get(s.index, C) for s in SOURCE.streams[1:]]
    assert got == PROMISED[container]
    # one notice per converted or dropped stream, and one for the extra video track when it is copied
    assert len(plan.notices) == sum(x != C for x in got) + (got[8] == C)
    assert [s.index for s in plan.copy] == [i for i, x in enumerate(got, start=1) if x != D]
    silent = plan_streams(SOURCE, container, audio=False)  # --no-audio: audio left out, without a notice
    assert not any(s.kind == "audio" for s in silent.copy) and len(silent.notices) == len(plan.notices) - sum(
        x != C for x in got[:3])


def test_the_issue_cases_are_converted_not_refused():
    """AAC and SRT into .webm, mov_text into .mkv: what the issue saw fail at the join."""
    assert PROMISED["webm"][0] == "libopus" and PROMISED["webm"][3] == "webvtt"
    assert PROMISED["matroska"][4] == "srt"


# --------------------------------------------------------------------------- the table against ffmpeg
# ffmpeg encoders for the codecs the table names (decoder names as `ffmpeg -i` prints them).
AUDIO_ENCODERS = {"aac": ["aac"], "mp3": ["libmp3lame"], "mp2": ["mp2"], "ac3": ["ac3"], "eac3": ["eac3"],
                  "opus": ["libopus"], "vorbis": ["libvorbis"], "flac": ["flac"], "alac": ["alac"],
                  "dts": ["dca", "-strict", "-2", "-ar", "48000"], "truehd": ["truehd", "-strict", "-2", "-ar", "48000"],
                  "wmav1": ["wmav1"], "wmav2": ["wmav2"], "pcm_s16le": ["pcm_s16le"], "pcm_s16be": ["pcm_s16be"],
                  "pcm_s24le": ["pcm_s24le"], "pcm_s32le": ["pcm_s32le"], "pcm_f32le": ["pcm_f32le"],
                  "pcm_u8": ["pcm_u8"]}
VIDEO_ENCODERS = {"h264": ["libx264"], "hevc": ["libx265", "-x265-params", "log-level=error"], "av1": ["libsvtav1"],
                  "vp8": ["libvpx"], "vp9": ["libvpx-vp9"], "mpeg4": ["mpeg4"], "mjpeg": ["mjpeg"], "png": ["png"],
                  "prores": ["prores_ks"], "flv1": ["flv"], "mpeg1video": ["mpeg1video"],
                  "mpeg2video": ["mpeg2video"], "wmv1": ["wmv1"], "wmv2": ["wmv2"]}
NO_ENCODER = {"wmv3", "vc1", "dvd_subtitle", "hdmv_pgs_subtitle", "dvb_subtitle"}  # ffmpeg cannot make these
MAIN_VIDEO = {"webm": "av1", "mpeg": "mpeg2video", "asf": "wmv2"}  # else h264, as the default codecs are
SRT = "1\n00:00:00,000 --> 00:00:00,200\nHello\n\n2\n00:00:00,300 --> 00:00:00,450\nWorld\n"


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    """One small Matroska/MP4 file per codec the table names (made once): kind -> codec -> file."""
    d = tmp_path_factory.mktemp("parts")
    video = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=0.2", "-pix_fmt"]  # MPEG-1: 25 fps
    out: dict = {"audio": {}, "video": {}, "text": {}, "cover": {}}
    for codec, enc in AUDIO_ENCODERS.items():
        out["audio"][codec] = make(d / f"a-{codec}.mkv", "-f", "lavfi", "-i", "sine=f=440:d=0.5", "-c:a", *enc)
    for codec, enc in VIDEO_ENCODERS.items():
        pix = "yuv422p10le" if codec == "prores" else "rgb24" if codec == "png" else "yuvj420p" if codec == "mjpeg" \
            else "yuv420p"
        fmt = "mpegts" if codec in ("mpeg1video", "mpeg2video") else "matroska"
        out["video"][codec] = make(d / f"v-{codec}.{fmt}", *video, pix, "-c:v", *enc, "-f", fmt)
    (d / "s.srt").write_text(SRT)
    for codec, enc in {"subrip": "srt", "ass": "ass", "ssa": "ssa", "webvtt": "webvtt"}.items():
        out["text"][codec] = make(d / f"s-{codec}.mkv", "-i", str(d / "s.srt"), "-c:s", enc)
    out["text"]["mov_text"] = make(d / "s-mov_text.mp4", "-i", str(d / "s.srt"), "-c:s", "mov_text")
    for codec in ("mjpeg", "png"):
        out["cover"][codec] = make(d / f"c-{codec}.mkv", "-f", "lavfi", "-i", "color=red:size=16x16:d=0.1",
                                   "-frames:v", "1", "-c:v", codec, "-pix_fmt",
                                   "rgb24" if codec == "png" else "yuvj420p")
    return out


def _entries(h: Holds, parts: dict) -> list[tuple[str, str, Path]]:
    """(kind, codec, file) for every entry of a row that ffmpeg can make."""
    entries = [("audio", c, parts["audio"][c]) for c in sorted(h.audio)]
    entries += [("subtitle", c, parts["text"][c]) for c in sorted(h.text)]
    entries += [("video", c, parts["video"][c]) for c in sorted(h.video or ()) if c not in NO_ENCODER]
    return entries + [("cover", c, parts["cover"][c]) for c in sorted(h.covers)]


def _packets(path: Path) -> dict[int, int]:
    r = subprocess.run([FFMPEG, "-v", "error", "-i", f"file:{path}", "-map", "0", "-c", "copy", "-f", "framecrc",
                        "-"], capture_output=True, text=True)
    counts: dict[int, int] = {}
    for line in r.stdout.splitlines():
        if line and not line.startswith("#"):
            counts[int(line.split(",")[0])] = counts.get(int(line.split(",")[0]), 0) + 1
    return counts


@pytest.mark.parametrize("container", sorted(STREAMS))
def test_every_table_entry_is_written_and_read_back_by_ffmpeg(container, parts, tmp_path):
    """Each codec the table says a container holds is stream-copied in by the bundled ffmpeg and
    reads back as the same codec with its packets; the rest of the table (image subtitles, WMV 9,
    VC-1) has no ffmpeg encoder to make a test stream with."""
    h = STREAMS[container]
    entries = _entries(h, parts)
    main = parts["video"][MAIN_VIDEO.get(container, "h264")]
    args = ["-i", f"file:{main}"]
    for _, _, f in entries:
        args += ["-i", f"file:{f}"]
    args += ["-map", "0:v:0"] + [a for k in range(len(entries)) for a in ("-map", f"{k + 1}:0")] + ["-c", "copy"]
    if container == "avi":  # as the concat demuxer does for the upscaled track
        args += ["-bsf:v:0", "h264_mp4toannexb"]
    covers = [i + 1 for i, e in enumerate(entries) if e[0] == "cover"]
    for i in covers:
        args += [f"-disposition:{i}", "attached_pic"]
    out = tmp_path / "out"
    r = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", *args, "-f", container, f"file:{out}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"{container}: {r.stderr[-600:]}"
    info = ff.probe(out)
    got = [(s.kind if not s.attached_pic else "cover", s.codec) for s in info.streams if s.kind != "data"][1:]
    assert got == [(k, c) for k, c, _ in entries], container
    packets = _packets(out)
    assert all(packets.get(s.index, 0) > 0 for s in info.streams if not s.attached_pic), (container, packets)


# --------------------------------------------------------------------------- the join, for real
@pytest.fixture(scope="module")
def segments(tmp_path_factory) -> dict[str, Path]:
    """One encoded segment per main video codec, made as a job makes them (the default settings)."""
    d = tmp_path_factory.mktemp("segs")
    out = {}
    for codec, ext in (("h264", ".mp4"), ("av1", ".webm"), ("mpeg2video", ".mpg"), ("wmv2", ".wmv")):
        settings = ff.encoder_settings(f"x{ext}")
        path = d / codec / f"seg-00000.{settings.segment_format}"
        path.parent.mkdir()
        out[codec] = make(path, "-f", "lavfi", "-i", f"testsrc2=size=32x24:rate={RATE}", "-frames:v", str(FRAMES),
                          *settings.args(), "-f", settings.segment_format)
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """A Matroska source with two audio tracks, SRT and ASS subtitles and a font; an MP4 one with
    AAC, mov_text subtitles, a cover picture and chapters (a data track)."""
    d = tmp_path_factory.mktemp("sources")
    (d / "s.srt").write_text(SRT)
    (d / "font.ttf").write_bytes(b"not really a font")
    (d / "meta.txt").write_text(";FFMETADATA1\ntitle=Movie\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=250\n"
                                "title=One\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=250\nEND=500\ntitle=Two\n")
    video = ["-f", "lavfi", "-i", f"testsrc2=size=16x12:rate={RATE}:duration={FRAMES / RATE}"]
    mkv = make(d / "src.mkv", *video, "-f", "lavfi", "-i", "sine=f=440:d=0.5", "-f", "lavfi", "-i", "sine=f=660:d=0.5",
               "-i", str(d / "s.srt"), "-i", str(d / "s.srt"), "-map", "0", "-map", "1", "-map", "2", "-map", "3",
               "-map", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a:0", "aac", "-c:a:1", "libopus",
               "-c:s:0", "srt", "-c:s:1", "ass", "-attach", str(d / "font.ttf"), "-metadata:s:t", "mimetype=font/ttf")
    cover = make(d / "cover.png", "-f", "lavfi", "-i", "color=blue:size=16x16", "-frames:v", "1")
    mp4 = make(d / "src.mp4", *video, "-f", "lavfi", "-i", "sine=f=440:d=0.5", "-i", str(d / "s.srt"), "-i",
               str(cover), "-i", str(d / "meta.txt"), "-map", "0", "-map", "1", "-map", "2", "-map", "3",
               "-map_chapters", "4", "-c:v:0", "libx264", "-pix_fmt", "yuv420p", "-c:v:1", "png", "-c:a", "aac",
               "-c:s", "mov_text", "-disposition:v:1", "attached_pic")
    return {"mkv": mkv, "mp4": mp4}


# codec names as read back for the encoders the table converts to
READ_AS = {"srt": "subrip", "libopus": "opus", "libmp3lame": "mp3"}


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv", ".webm", ".avi", ".flv", ".ts", ".mpg", ".wmv"])
@pytest.mark.parametrize("kind", ["mkv", "mp4"])
def test_the_join_writes_what_the_plan_decided(kind, ext, sources, segments, tmp_path):
    container = ff.container_for(f"x{ext}")
    source = ff.probe(sources[kind])
    seg = segments[MAIN_VIDEO.get(container, "h264")]
    work = tmp_path / "work"
    work.mkdir()
    (work / seg.name).write_bytes(seg.read_bytes())
    out = tmp_path / f"out{ext}"
    plan = ff.join_and_mux([work / seg.name], [Fraction(FRAMES, RATE)], source, out, container, 0.0, work)
    info = ff.probe(out)
    want = [("cover" if s.attached_pic else s.kind, READ_AS.get(plan.encode.get(s.index), plan.encode.get(s.index))
             or s.codec) for s in plan.copy]
    got = [("cover" if s.attached_pic else s.kind, s.codec) for s in info.streams if s.kind != "data"][1:]
    assert got == want, (kind, ext, plan.notices)
    assert not any(s.kind == "data" for s in info.streams) or container in ("mp4", "mov")  # MP4 chapters: a text track
    if source.chapters and container in ("mp4", "mov", "matroska"):
        assert info.chapters == source.chapters


# --------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def copy_model(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    return write_copy_model(tmp_path_factory.mktemp("model") / "copy_x2.onnx")


@pytest.mark.parametrize("kind, ext, streams", [
    ("mp4", ".webm", [("audio", "opus"), ("subtitle", "webvtt")]),
    ("mkv", ".webm", [("audio", "opus"), ("audio", "opus"), ("subtitle", "webvtt"), ("subtitle", "webvtt")]),
    ("mp4", ".mkv", [("audio", "aac"), ("subtitle", "subrip")]),
], ids=["aac-movtext-to-webm", "srt-ass-font-to-webm", "movtext-to-mkv"])
def test_srdeploy_video_converts_what_the_container_cannot_hold(copy_model, sources, tmp_path, capsys, kind, ext,
                                                                 streams):
    """The issue's cases, through the command: AAC and SRT into .webm, mov_text into .mkv."""
    from srdeploy.cli import main

    out = tmp_path / f"out{ext}"
    assert main(["video", "-i", str(sources[kind]), "-o", str(out), "--model", str(copy_model), "--tile", "0",
                 "-q"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    info = ff.probe(out)
    assert [(s.kind, s.codec) for s in info.streams if s.kind != "data"][1:] == streams
    plan = plan_streams(ff.probe(sources[kind]), ff.container_for(out))
    assert [ln for ln in err.splitlines() if ln.startswith("note:")] == [f"note: {n}" for n in plan.notices]
    assert len(info.streams) > 1 and not list(tmp_path.glob(".*"))  # nothing left beside the output
