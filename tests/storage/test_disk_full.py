"""A full disk or a read-only store fails closed without crashing the service.

The store is the real ArcticDB on LMDB, on a small tmpfs the test mounts (root only: skipped
elsewhere with the reason) and fills with a file. Measured (server/storage/disk.py): once an
LMDB commit has failed, any later use of ArcticDB in the process crashes it (SIGSEGV/SIGABRT),
so the service runs as a subprocess here: a crash shows as death by a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.storage.disk import RESERVE_FRACTION
from tests.api.protocol import pb_fill
from tests.service_process import run_service, start_service

SIZE = "32m"  # the store keeps min(64 MiB, 5%) free: 1.6 MiB here


def _mount(folder: Path, *options: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join((f"size={SIZE}", *options)), "tmpfs", folder],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB filesystem of its own, unmounted afterwards."""
    folder = tmp_path / "fs"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root)")
    try:
        _mount(folder)
    except (OSError, subprocess.CalledProcessError) as error:
        reason = getattr(error, "stderr", "") or error
        pytest.skip(f"this machine does not allow mounting a tmpfs: {reason}")
    yield folder
    subprocess.run(["umount", "-l", folder], check=False)


def fill_disk(folder: Path) -> Path:
    """Takes every free byte of `folder`'s filesystem; returns the file to delete."""
    filler = folder / "filler"
    # Unbuffered: a short last write leaves nothing behind for close() to fail on.
    with open(filler, "ab", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    assert os.statvfs(folder).f_bavail < 16
    return filler


class Service:
    """The service as a subprocess, its stderr collected in the background."""

    def __init__(self, store: str, *args: str) -> None:
        self.process, self.address = start_service("--store", store, *args)
        self.lines: list[str] = []
        stderr = self.process.stderr
        assert stderr is not None
        self._reader = threading.Thread(target=lambda: self.lines.extend(stderr), daemon=True)
        self._reader.start()
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.PortfolioManagerStub(self.channel)

    def ingest(self, *events: pb.ExecutionEvent) -> list[pb.EventAck]:
        request = pb.IngestRequest(batch_id="b", events=events)
        (response,) = self.stub.Ingest(iter([request]), timeout=30)
        return list(response.acks)

    def health(self) -> int:
        request = health_pb2.HealthCheckRequest(service="")
        return health_pb2_grpc.HealthStub(self.channel).Check(request, timeout=5).status

    def wait_health(self, status: int, seconds: float = 15.0) -> None:
        """Polls until `status`, within `seconds` in all. A check may go unanswered for its
        5 s while the loop applies a held-back group of 20,000 fills (two loaded cores): that
        one counts as not yet."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                if self.health() == status:
                    return
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
            assert self.process.poll() is None, f"the service died: {self.stderr()}"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    def stderr(self) -> str:
        self._reader.join(timeout=5)
        return "".join(self.lines)

    def stop(self) -> int:
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def settle() -> None:
    """The ack came after the write-ahead log; the journal follows within 100 ms and the views
    within a second (they are written at most once a second). An LMDB commit that fails ends
    the process (disk.py), so the tests of the acknowledging path let those background writes
    land before the disk fills."""
    time.sleep(2.5)


def refused(service: Service, *events: pb.ExecutionEvent) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        service.ingest(*events)
    return raised.value


def test_a_full_disk_stops_acks_without_crashing_and_the_service_resumes_by_itself(small_fs):
    service = Service(f"lmdb://{small_fs}/store", "--grace-seconds", "1")
    try:
        assert service.ingest(pb_fill("BUY", 10, 5, fill_id="kept"))[0].sequence == 1
        settle()
        filler = fill_disk(small_fs)

        in_flight, later = pb_fill("BUY", 1, 5), pb_fill("BUY", 1, 5)
        error = refused(service, in_flight)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        service.wait_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        time.sleep(2)  # the group is retried with back-off meanwhile (0.05 s, 0.1 s, ...)
        assert service.process.poll() is None, f"the service died: {service.stderr()}"
        error = refused(service, later)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "disk full" in error.details(), error.details()
        position = service.stub.GetPosition(
            pb.GetPositionRequest(account_id="A1", instrument_id="AAPL")
        )
        assert position.quantity == "10"

        filler.unlink()
        service.wait_health(health_pb2.HealthCheckResponse.SERVING)
        acks = service.ingest(in_flight, later)
        assert [(a.result, a.sequence) for a in acks] == [
            (pb.EVENT_RESULT_DUPLICATE, 2),
            (pb.EVENT_RESULT_ACCEPTED, 3),
        ]
    finally:
        code = service.stop()
    log = service.stderr()
    assert code == 0, log
    assert "Traceback" not in log
    assert "disk full" in log


def test_a_group_larger_than_the_room_left_is_refused_whole_and_taken_once_room_is_back(
    small_fs,
):
    """The check passes, the write does not (one group larger than the room above the
    reserve). The group goes to the write-ahead log first, a plain file: the failed write is
    cut back, nothing is acknowledged, ArcticDB is never asked (an LMDB commit that fails
    corrupts the process), and the service goes on. Once there is room the group lands, and a
    restart finds every acknowledged fill, and only those."""
    store = f"lmdb://{small_fs}/store"
    service = Service(store, "--max-batch-events", "20000", "--grace-seconds", "1")
    kept = pb_fill("BUY", 10, 5, fill_id="kept")
    try:
        assert service.ingest(kept)[0].sequence == 1
        settle()
        filler = fill_disk(small_fs)
        stats = os.statvfs(small_fs)
        reserve = int(stats.f_blocks * stats.f_frsize * RESERVE_FRACTION)
        os.truncate(filler, os.path.getsize(filler) - reserve - 256 * 1024)
        long_strategy = uuid.uuid4().hex * 4  # one row, long texts
        big = [  # about 4 MB in the log: more than is free
            pb_fill("BUY", 1, 5, fill_id=uuid.uuid4().hex, strategy=long_strategy)
            for _ in range(20_000)
        ]
        error = refused(service, *big)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert "write-ahead log" in error.details(), error.details()
        service.wait_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        assert service.process.poll() is None, f"the service died: {service.stderr()}"
        wal = sorted((small_fs / "store" / "portfolio-wal").glob("*.wal"))
        assert sum(path.stat().st_size for path in wal) < 1024  # the failed write is cut back

        filler.unlink()
        service.wait_health(health_pb2.HealthCheckResponse.SERVING, seconds=30)
        acks = service.ingest(*big)  # the relay's resend: the group landed once room came back
        assert {a.result for a in acks} == {pb.EVENT_RESULT_DUPLICATE}
        assert [a.sequence for a in acks] == list(range(2, 20_002))
    finally:
        code = service.stop()
    log = service.stderr()
    assert code == 0, log
    assert "Fatal Python error" not in log

    again = Service(store)  # a restart finds every acknowledged fill, and only those
    try:
        acks = again.ingest(kept, big[-1], pb_fill("BUY", 1, 5, fill_id="new"))
        assert [(a.result, a.sequence) for a in acks] == [
            (pb.EVENT_RESULT_DUPLICATE, 1),
            (pb.EVENT_RESULT_DUPLICATE, 20_001),
            (pb.EVENT_RESULT_ACCEPTED, 20_002),
        ]
    finally:
        assert again.stop() == 0


def test_starting_on_a_full_disk_ends_with_one_clear_line(small_fs):
    fill_disk(small_fs)
    result = run_service("--store", f"lmdb://{small_fs}/store", "--port", "0", timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot open store {small_fs}/store: disk full" in lines[0]


def test_starting_on_a_read_only_store_ends_with_one_clear_line(small_fs):
    store = f"lmdb://{small_fs}/store"
    service = Service(store)  # a store with its libraries, as a previous run left it
    assert service.health() == health_pb2.HealthCheckResponse.SERVING  # SIGTERM handled now
    assert service.stop() == 0
    subprocess.run(["mount", "-o", "remount,ro", small_fs], check=True)
    result = run_service("--store", store, "--port", "0", timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot open store {small_fs}/store: read-only filesystem" in lines[0]


@pytest.fixture
def ext4_remount_ro(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A 64 MiB ext4 image mounted with errors=remount-ro, and the file that reports an error
    to it (the filesystem then refuses writes, as after a failing disk)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a filesystem image needs root (CI runs as root)")
    image, folder = tmp_path / "ext4.img", tmp_path / "fs"
    folder.mkdir()
    try:
        with open(image, "wb") as out:
            out.truncate(64 * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", image], check=True, capture_output=True)
        subprocess.run(
            ["mount", "-o", "loop,errors=remount-ro", image, folder],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"this machine does not allow a loop-mounted ext4: {error}")
    device = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", folder], capture_output=True, text=True, check=True
    ).stdout.strip()
    trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
    try:
        if not trigger.exists():
            pytest.skip(f"this kernel has no {trigger} to turn ext4 read-only on cue")
        yield folder, trigger
    finally:
        subprocess.run(["umount", "-l", folder], check=False)


def test_a_store_turned_read_only_while_running_fails_closed_without_crashing(ext4_remount_ro):
    folder, trigger = ext4_remount_ro
    store = f"lmdb://{folder}/store"
    service = Service(store, "--grace-seconds", "1")
    try:
        assert service.ingest(pb_fill("BUY", 10, 5, fill_id="kept"))[0].sequence == 1
        settle()
        trigger.write_text("1")  # ext4 now refuses every write: "emergency_ro"

        error = refused(service, pb_fill("BUY", 1, 5))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        service.wait_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        time.sleep(2)  # retried with back-off meanwhile
        assert service.process.poll() is None, f"the service died: {service.stderr()}"
        error = refused(service, pb_fill("BUY", 1, 5))
        assert "Read-only file system" in error.details(), error.details()
    finally:
        code = service.stop()
    log = service.stderr()
    assert code == 0, log
    assert "Traceback" not in log

    result = run_service("--store", store, "--port", "0", timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot open store {folder}/store: cannot write to" in lines[0]
    assert "Read-only file system" in lines[0]
