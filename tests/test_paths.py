"""The one atomic writer: a file appears whole or not at all, and failures are typed."""

import errno
import json
import math

import pytest

from mixagent.errors import StoreWriteError
from mixagent.paths import atomic_write, atomic_write_bytes, atomic_write_json, staged_dir


def test_json_is_strict_and_nothing_is_written_for_nan(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"a": 1.5})
    assert json.loads(path.read_text()) == {"a": 1.5} and path.read_text() == '{\n "a": 1.5\n}'
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": math.nan})
    assert json.loads(path.read_text()) == {"a": 1.5}  # the old version is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary file left behind


def test_a_failed_write_leaves_the_old_file_and_raises_a_typed_error(tmp_path):
    path = tmp_path / "w.bin"
    atomic_write_bytes(path, b"old")

    def half_then_disk_full(tmp):
        tmp.write_bytes(b"ne")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StoreWriteError, match="the disk is full") as err:
        atomic_write(path, half_then_disk_full)
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


def test_staged_dir_publishes_whole_or_nothing(tmp_path):
    final = tmp_path / "cache" / "x"
    with pytest.raises(RuntimeError), staged_dir(final) as tmp:
        (tmp / "a").write_text("1")
        raise RuntimeError("crash mid-build")
    assert not final.exists() and list(final.parent.iterdir()) == []
    with staged_dir(final) as tmp:
        (tmp / "a").write_text("1")
    assert (final / "a").read_text() == "1"


def test_concurrent_writers_never_share_a_temporary_file(tmp_path):
    import threading

    path, errors, torn = tmp_path / "cache.json", [], []

    def writer(tag):
        for i in range(60):
            try:
                atomic_write_json(path, {"tag": tag, "i": i, "body": list(range(2000))})
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    def reader():
        for _ in range(200):
            if path.exists():
                try:
                    json.loads(path.read_text())
                except ValueError:
                    torn.append(1)

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not torn and json.loads(path.read_text())["i"] == 59
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]
