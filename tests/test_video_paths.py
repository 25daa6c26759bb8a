"""A video path that cannot be used gets a `VideoDecodeError` naming the real cause: an empty path, a symlink loop,
a broken link, a folder that cannot be entered, a file that cannot be read, a FIFO or a device (never opened, so
never blocking), a directory; and `~` and environment variables are expanded as a shell would."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from dataset_builder.synthetic_video import write_video
from modeling_hour_llava.video_loading_hour_llava import (
    VideoDecodeError,
    decode_frames,
    open_frame_stream,
    probe_video,
)


def reason_for(path) -> str:
    with pytest.raises(VideoDecodeError) as caught:
        probe_video(path)
    assert caught.value.path == os.fspath(path)
    return caught.value.reason


def test_empty_path():
    assert reason_for("") == "empty path: give the path of a video file"


def test_symlink_loop(tmp_path):
    os.symlink(tmp_path / "b.mp4", tmp_path / "a.mp4")
    os.symlink(tmp_path / "a.mp4", tmp_path / "b.mp4")
    assert reason_for(tmp_path / "a.mp4").startswith("symlink loop")


def test_broken_symlink_names_its_target(tmp_path):
    os.symlink(tmp_path / "gone.mp4", tmp_path / "link.mp4")
    assert reason_for(tmp_path / "link.mp4") == (
        f"broken symbolic link (it points to {str(tmp_path / 'gone.mp4')!r}, which does not exist)"
    )


def test_missing_file_and_file_used_as_folder(tmp_path):
    assert reason_for(tmp_path / "missing.mp4") == "file not found"
    (tmp_path / "notes.txt").write_text("x")
    assert reason_for(tmp_path / "notes.txt" / "clip.mp4").startswith("not found (a part of the path is a file")


def test_fifo_and_devices_are_not_regular_files(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")  # opening it would block until a writer comes: it must not be opened
    assert reason_for(tmp_path / "pipe.mp4") == "not a regular file: a FIFO (named pipe)"
    assert reason_for("/dev/zero") == "not a regular file: a character device"
    assert reason_for(tmp_path) == "is a directory, not a video file"


def unprivileged_reason(path) -> str:
    """`reason_for(path)` as a user without root's right to read everything (root: in a forked child that drops to
    uid 65534 first)."""
    if os.geteuid() != 0:
        return reason_for(path)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: drop privileges, report the reason through the pipe, and leave at once
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                probe_video(path)
                message = "no error"
            except VideoDecodeError as error:
                message = error.reason
            os.write(write, message.encode())
        finally:
            os._exit(0)
    os.close(write)
    message = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(child, 0)
    return message


@pytest.fixture
def world_readable_folder():
    folder = tempfile.mkdtemp(prefix="hour_llava_paths_")  # under /tmp, which every user may enter
    os.chmod(folder, 0o755)
    yield folder
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(folder)


def test_folder_that_cannot_be_entered_and_file_that_cannot_be_read(world_readable_folder):
    locked = os.path.join(world_readable_folder, "locked")
    os.mkdir(locked)
    inside = write_video(os.path.join(locked, "clip.mp4"), num_frames=4, fps=4)
    os.chmod(inside, 0o644)
    os.chmod(locked, 0o000)
    assert unprivileged_reason(inside) == "permission denied (a folder on the path cannot be entered)"
    private = write_video(os.path.join(world_readable_folder, "private.mp4"), num_frames=4, fps=4)
    os.chmod(private, 0o000)
    assert unprivileged_reason(private) == "permission denied (the file cannot be read)"


def test_home_and_environment_variables_are_expanded(tmp_path, monkeypatch):
    write_video(tmp_path / "clip.mp4", num_frames=20, fps=10)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HOUR_LLAVA_TEST_VIDEOS", str(tmp_path))
    for path in ("~/clip.mp4", "$HOUR_LLAVA_TEST_VIDEOS/clip.mp4", "${HOUR_LLAVA_TEST_VIDEOS}/clip.mp4"):
        frames, info, _ = decode_frames(path, size=32, min_frames=1)
        assert info.path == str(tmp_path / "clip.mp4") and frames.shape[0] == 2
        assert open_frame_stream(path, size=32, min_frames=1).info.path == str(tmp_path / "clip.mp4")
    # An error names the path as expanded: the file that was looked for.
    assert reason_for(tmp_path / "nothing.mp4") == "file not found"
    with pytest.raises(VideoDecodeError, match="file not found") as caught:
        probe_video("~/nothing.mp4")
    assert caught.value.path == str(tmp_path / "nothing.mp4")
