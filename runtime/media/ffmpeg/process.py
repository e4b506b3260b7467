"""The ffmpeg executable and its processes: every ffmpeg run of srdeploy starts here.

* ``ffmpeg_exe``: which ffmpeg. ``srdeploy video --ffmpeg PATH`` calls ``use_ffmpeg`` once, which
  sets ``$SRDEPLOY_FFMPEG`` (so processes started later, Ray workers included, see the same
  one); without it, the static ffmpeg of the PyPI package ``imageio-ffmpeg`` (a base dependency).
* ``Process``: one ffmpeg run with an argument list (no shell); its stderr is copied to a log
  file while a short tail stays in memory, so an error names the cause even when the log itself
  could not be written (a full disk). ``run`` runs one to completion, ``capture`` runs one whose
  output is the answer (``ffmpeg -i``, ``-encoders``).
* ``FrameDecoder`` / ``FrameEncoder``: frames as raw BGR24 bytes through pipes (``rawvideo``),
  never through files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from .codecs import EncoderSettings
    from .probe import MediaInfo

FFMPEG_ENV = "SRDEPLOY_FFMPEG"

# --------------------------------------------------------------------------- executable
def ffmpeg_exe() -> str:
    """The ffmpeg executable: ``$SRDEPLOY_FFMPEG`` if set, else the one bundled by imageio-ffmpeg."""
    env = os.environ.get(FFMPEG_ENV)
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"$SRDEPLOY_FFMPEG={env}: no such executable; unset it to use the bundled ffmpeg")
        return env
    try:
        import imageio_ffmpeg
    except ModuleNotFoundError as exc:
        raise RuntimeError("srdeploy video needs the package imageio-ffmpeg (a dependency of srdeploy): "
                           "pip install imageio-ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def use_ffmpeg(path: str) -> str:
    """Make ``path`` (a file, or a name on PATH) the ffmpeg of this process and of the processes it
    starts (``--ffmpeg``); returns the resolved executable.

    Raises:
        FileNotFoundError: no such executable.
    """
    exe = shutil.which(path)
    if exe is None:
        raise FileNotFoundError(f"--ffmpeg {path}: no such executable")
    os.environ[FFMPEG_ENV] = os.path.abspath(exe)
    return os.environ[FFMPEG_ENV]


class FFmpegError(RuntimeError):
    """An ffmpeg process failed; the message is one line naming the cause and the log file.

    Attributes:
        cause: the short cause ("No space left on device", ffmpeg's last line...).
        log: the log file holding ffmpeg's full stderr (None when there is none).
    """

    def __init__(self, message: str, cause: str = "", log: Path | None = None) -> None:
        super().__init__(message)
        self.cause = cause or message
        self.log = log

    @property
    def log_note(self) -> str:
        """" (ffmpeg log: LOG)" for a message that re-states this error, or "" when there is no log."""
        return f" (ffmpeg log: {self.log})" if self.log else ""


# Causes worth naming on their own (searched in ffmpeg's stderr, first match wins).
_CAUSES = ("No space left on device", "Disk quota exceeded", "Permission denied", "Read-only file system",
           "Input/output error", "Broken pipe", "File too large")


# Lines ffmpeg prints after the real cause, as it winds its threads down.
_AFTERMATH = re.compile(r"Nothing was written into output file|Conversion failed|Task finished with error code|"
                        r"Terminating thread with return code|Error while opening encoder|Could not open encoder "
                        r"before EOF|Error sending frames to consumers|Error while filtering|Error initializing "
                        r"output stream")
_CONTEXT = re.compile(r"\[[^\]\[]* @ 0x[0-9a-f]+\] ")  # "[h264_nvenc @ 0x55b5c394a580] "


def failure_cause(text: str) -> str:
    """The most telling line of an ffmpeg stderr tail: a known OS error, else its last line that
    is not part of ffmpeg's wind-down (without the "[codec @ 0x...]" prefixes)."""
    for cause in _CAUSES:
        if cause in text:
            return cause
    lines = [_CONTEXT.sub("", ln).strip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    telling = [ln for ln in lines if not _AFTERMATH.search(ln)]
    return (telling or lines or ["no message"])[-1]


class Process:
    """An ffmpeg subprocess whose stderr is copied to ``log`` while a tail stays in memory.

    Args:
        args: arguments after the executable.
        log: log file (appended; write errors are ignored, so a full disk still reports).
        stdin, stdout: subprocess.PIPE or None.
    """

    def __init__(self, args: Sequence[str], log: Path, *, stdin=None, stdout=None) -> None:
        self.log = Path(log)
        self.tail: deque[str] = deque(maxlen=30)
        cmd = [ffmpeg_exe(), "-hide_banner", *([] if stdin is not None else ["-nostdin"]), *args]
        try:
            self._log = open(self.log, "a", encoding="utf-8", errors="replace")
            self._log.write("$ " + " ".join(cmd) + "\n")
        except OSError:
            self._log = None
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._pump, name="srdeploy-ffmpeg-log", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.tail.append(line)
            if self._log is not None:
                try:
                    self._log.write(line)
                except OSError:  # the disk may be the thing that failed; keep the tail anyway
                    self._log = None

    def wait(self) -> int:
        rc = self.proc.wait()
        self._reader.join()
        if self._log is not None:
            try:
                self._log.close()
            except OSError:
                pass
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self.wait()

    def error(self, what: str) -> FFmpegError:
        cause = failure_cause("".join(self.tail))
        return FFmpegError(f"{what}: {cause} (ffmpeg log: {self.log})", cause, self.log)


def run(args: Sequence[str], log: Path, what: str) -> None:
    """Run ffmpeg to completion; raise FFmpegError("WHAT: cause (ffmpeg log: LOG)") on failure."""
    p = Process(args, log)
    if p.wait() != 0:
        raise p.error(what)


def capture(args: Sequence[str]) -> subprocess.CompletedProcess:
    """Run ffmpeg for what it prints (``-i FILE`` without an output, ``-encoders``, ``-h``): stdout and
    stderr as text, whatever the exit status (``ffmpeg -i`` alone always "fails")."""
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args], capture_output=True, text=True,
                          errors="replace")


# --------------------------------------------------------------------------- decode / encode pipes
class FrameDecoder:
    """Decode ``count`` frames of the video stream, starting at ``seek`` seconds, as BGR24 arrays.

    ``seek`` is a time between the previous frame and the first wanted one (so rounding can never
    pick the wrong frame); ffmpeg seeks to the keyframe before it and decodes forward, dropping
    earlier frames (accurate seek). Rotation is applied, as in ``frame_times``.

    Args:
        info: the probed source.  width, height: decoded size (``FrameTimes``).
        seek: seconds from the container start (None: from the first frame).
        count: frames to read.  log: ffmpeg's stderr.
    """

    def __init__(self, info: MediaInfo, width: int, height: int, seek: float | None, count: int, log: Path) -> None:
        self.info, self.width, self.height, self.count = info, width, height, count
        args = ["-v", "error"]
        if seek is not None:
            args += ["-ss", f"{seek:.6f}"]
        args += ["-i", f"file:{info.path}", "-map", f"0:{info.video}", "-fps_mode", "passthrough",
                 "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
        self.process = Process(args, log, stdout=subprocess.PIPE)

    def __iter__(self) -> Iterator[np.ndarray]:
        size = self.width * self.height * 3
        out = self.process.proc.stdout
        for _ in range(self.count):
            buf = out.read(size)
            if len(buf) < size:
                break
            yield np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 3)

    def close(self) -> int:
        """Stop the decoder (it may still be running when fewer frames were wanted)."""
        self.process.kill()
        return self.process.proc.returncode


class FrameEncoder:
    """An ffmpeg process that encodes BGR24 frames written to its stdin into ``path``.

    Args:
        path: output file (written by ffmpeg directly: give it a temporary name).
        width, height: frame size.  rate: frame rate of the output (exact fraction).
        settings: EncoderSettings.  log: ffmpeg's stderr.
        fmt: muxer (default: ``settings.segment_format``).  sar: sample aspect ratio to tag.
    """

    def __init__(self, path: Path, width: int, height: int, rate: Fraction, settings: EncoderSettings, log: Path,
                 *, fmt: str | None = None, sar: Fraction = Fraction(1)) -> None:
        self.path = Path(path)
        self.frames = 0
        args = ["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
                "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0"]
        if sar != 1:
            args += ["-vf", f"setsar={sar.numerator}/{sar.denominator}"]
        args += settings.args() + ["-f", fmt or settings.segment_format, f"file:{path}"]
        self.process = Process(args, log, stdin=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        try:
            self.process.proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except (BrokenPipeError, ValueError, OSError):
            # ffmpeg exited (disk full, bad option, killed): its stderr says why
            self.process.kill()
            raise self.process.error(f"{self.path}: the encoder stopped after {self.frames} frames") from None
        self.frames += 1

    def close(self) -> None:
        """Finish the file; raise FFmpegError naming the cause if ffmpeg failed."""
        try:
            self.process.proc.stdin.close()
        except OSError:
            pass
        if self.process.wait() != 0:
            raise self.process.error(f"{self.path}: encoding failed")

    def abort(self) -> None:
        self.process.kill()
