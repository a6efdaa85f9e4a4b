"""One lock per ONTAP volume for the whole PVE cluster: a directory in pmxcfs's priv/lock/,
made with mkdir, updated while held, expired by pmxcfs when its run died; this node's lock
file where the user allows it (-local-lock). Each test's own directory stands for
/etc/pve/priv (conftest.py); world.PmxcfsLocks gives it pmxcfs's expiry."""

import errno
import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from world import FILE_CLONE, HOLDER, ONTAP_PASSWORD, PmxcfsLocks, error_lines, hold_cluster_lock

import pve_ontap_snapshot as tool

SCRIPT = Path(__file__).resolve().parent.parent / 'pve_ontap_snapshot.py'
HELD_BY = 'pid 4242 on node pve2 since 2024-03-13_14:42:47+0000: storage create -storage ONTAP01'


def hold_node_lock(path):
    """Another run's lock file on this node (pid 4242); closing the file releases it."""
    path.parent.mkdir(exist_ok=True)
    handle = path.open('a+')
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.truncate(0)
    handle.write('4242\n')
    handle.flush()
    return handle


def test_a_held_lock_is_a_clear_message_naming_the_other_run_and_its_node(world, cluster_dir):
    lock = hold_cluster_lock(world, cluster_dir)
    before = world.state()

    result = world.run('storage', 'create', '-storage', 'ONTAP01')
    vm = world.run('vm', 'create', '-vm', 101)

    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: storage ONTAP01 (volume proxmox_storage01) is in use by another '
                                    f'pve-ontap-snapshot run ({HELD_BY}, lock {lock}): try again later or wait '
                                    'with -wait SECONDS')]
    assert vm.code == 1 and 'on node pve2' in vm.err
    assert world.state() == before and lock.is_dir()


def test_wait_takes_the_lock_once_the_other_run_is_done(world, cluster_dir):
    lock = hold_cluster_lock(world, cluster_dir)
    threading.Timer(0.3, lock.rmdir).start()

    result = world.run('-wait', 5, 'storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert len(world.vol1.snapshots) == 1
    assert not lock.exists()     # released at the end, and nothing left inside it before


def test_a_dead_runs_lock_expires_as_pmxcfs_expires_it(world, cluster_dir, monkeypatch):
    lock = hold_cluster_lock(world, cluster_dir)
    with PmxcfsLocks(lock.parent, expiry=0.5):
        result = world.run('-wait', 10, 'storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert len(world.vol1.snapshots) == 1


def test_a_held_lock_is_kept_fresh_so_that_pmxcfs_never_expires_it(world, cluster_dir, monkeypatch):
    monkeypatch.setattr(tool.Locks, 'CLUSTER_REFRESH', 0.05)
    tool.Locks.check_cluster_usable()
    lock = cluster_dir / 'lock' / (tool.Locks.CLUSTER_PREFIX + 'vol')
    asked = []
    # an expiry of 20 refreshes: a loaded machine may delay a refresh, but not by that much
    with PmxcfsLocks(lock.parent, expiry=1.0) as pmxcfs, tool.Locks.on_cluster('vol', 'volume vol', 0, HOLDER):
        deadline = time.monotonic() + 2.5     # more than twice the expiry, unlock requests all along
        while time.monotonic() < deadline:
            pmxcfs.unlock_request(lock)
            asked.append(lock.is_dir())
            time.sleep(0.05)
    assert all(asked) and len(asked) > 10
    assert not lock.exists()


def test_two_storages_on_one_volume_share_its_lock_and_its_stamps(world, cluster_dir):
    world.pve.storages['ONTAP01B'] = dict(world.pve.storages['ONTAP01'], path='/mnt/pve/ONTAP01B', files=set(),
                                          volumes={})
    world.write_config(ONTAP01B=f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\n'
                                f'verify = {world.a.cafile}\n')

    for storage in ('ONTAP01', 'ONTAP01B', 'ONTAP01', 'ONTAP01B'):
        result = world.run('storage', 'create', '-storage', storage)
        assert result.code == 0, result.err

    # back to back, within a second or two: each waited for a stamp the other had not used
    assert len([name for name in world.vol1.snapshots if name.startswith('proxmox_snapshot_')]) == 4
    assert [path.name for path in world.lock_record(cluster_dir).parent.glob("*.lock")] == [world.lock_name()]
    lock = hold_cluster_lock(world, cluster_dir)
    held = world.run('storage', 'create', '-storage', 'ONTAP01B')
    assert error_lines(held) == [(f'ERROR: storage ONTAP01B (volume proxmox_storage01) is in use by another '
                                  f'pve-ontap-snapshot run ({HELD_BY}, lock {lock}): try again later or wait with '
                                  '-wait SECONDS')]


def test_the_record_says_who_ran_last_and_the_stamp_it_used(world, cluster_dir):
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0

    holder, stamp = world.lock_record(cluster_dir).read_text().splitlines()
    pid, node, since, command = holder.split(' ', 3)
    assert (pid, node) == (f'{os.getpid()}:{tool.Holder.process_start(os.getpid())}', os.uname().nodename.split('.')[0])
    assert command.endswith('vm create -vm 101 -no-register') and since <= stamp.split(' ')[1]
    assert stamp.startswith('vm101 ')


@pytest.fixture
def off_a_node(tmp_path, monkeypatch):
    """No /etc/pve: this is no PVE node."""
    monkeypatch.setattr(tool.Node, 'CLUSTER_DIR', str(tmp_path / 'no-pve'))


def test_off_a_node_a_change_needs_local_lock_and_then_locks_this_node(world, lock_dir, off_a_node):
    before = world.state()

    refused = world.run('storage', 'create', '-storage', 'ONTAP01')
    assert refused.code == 1 and world.state() == before
    (line,) = error_lines(refused)
    assert line.startswith('ERROR: not on a PVE node') and 'add -local-lock if no run on another node' in line
    assert world.run('storage', 'list', '-storage', 'ONTAP01').code == 0       # reads take no lock

    handle = hold_node_lock(world.lock_file(lock_dir))
    try:
        held = world.run('-local-lock', 'storage', 'create', '-storage', 'ONTAP01')
    finally:
        handle.close()
    done = world.run('-local-lock', 'storage', 'create', '-storage', 'ONTAP01')

    assert error_lines(held) == [(f'ERROR: storage ONTAP01 (volume proxmox_storage01) is in use by another '
                                  f'pve-ontap-snapshot run (pid 4242, lock {world.lock_file(lock_dir)}): try again '
                                  'later or wait with -wait SECONDS')]
    assert done.code == 0, done.err
    assert 'locking on this node only (-local-lock)' in done.err
    assert len(world.vol1.snapshots) == 1


def test_without_quorum_the_cluster_lock_is_refused_in_its_own_words(world, cluster_dir):
    (cluster_dir / 'lock').write_text('')     # mkdir fails below it, as on a read-only /etc/pve
    before = world.state()

    result = world.run('vm', 'create', '-vm', 101)
    fallback = world.run('-local-lock', 'vm', 'create', '-vm', 101, '-no-register')

    (line,) = error_lines(result)
    assert 'is not writable' in line and 'no quorum?' in line and '-local-lock' in line
    assert world.state() != before and fallback.code == 0, fallback.err
    assert len(world.clones(world.vol1, 101)) == 1


def test_two_runs_at_once_meet_at_the_cluster_lock(world, cluster_dir):
    """Two processes sharing one priv/lock, as two nodes share pmxcfs: the second waits or is told who works."""
    # the first run's clone is held unanswered until the second run was refused
    cloning, answer = threading.Event(), threading.Event()

    def hold(record):
        if record['path'] == FILE_CLONE:
            cloning.set()
            answer.wait(30)

    world.a.on_request = hold
    first = subprocess.Popen([sys.executable, str(SCRIPT), '-config', str(world.config), 'vm', 'create', '-vm', '101',
                              '-no-register'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert cloning.wait(30), first.communicate()
        refused = world.run('storage', 'create', '-storage', 'ONTAP01')
        threading.Timer(0.5, answer.set).start()    # while the next run waits
        waited = world.run('-wait', 30, 'storage', 'create', '-storage', 'ONTAP01')
    finally:
        answer.set()
        world.a.on_request = None
    first.communicate(timeout=60)

    (line,) = error_lines(refused)
    assert f'is in use by another pve-ontap-snapshot run (pid {first.pid} on node ' in line
    assert 'vm create -vm 101 -no-register' in line
    assert first.returncode == 0 and waited.code == 0, waited.err
    assert len(world.vol1.snapshots) == 1 and not world.cluster_lock(cluster_dir).exists()


# -- a lock that may be lost, a holder that died

@pytest.fixture
def refusing_refreshes(monkeypatch):
    """pmxcfs refuses every refresh of a lock once the Event this returns is set (EACCES: no
    quorum, or the lock is no longer this node's); locks are refreshed every 50 ms."""
    real, refusing = os.utime, threading.Event()

    def utime(path, times=None, **kwargs):
        if refusing.is_set() and times and times[1] and str(path).rsplit('/', 2)[-2:-1] == ['lock']:
            raise PermissionError(errno.EACCES, 'Permission denied', str(path))
        return real(path, times, **kwargs)
    monkeypatch.setattr(tool.Locks, 'CLUSTER_REFRESH', 0.05)
    monkeypatch.setattr(os, 'utime', utime)
    return refusing


def test_a_refresh_pmxcfs_refuses_stops_every_change_but_the_vms_return(world, cluster_dir, refusing_refreshes):
    vm = world.with_agent(100)
    lost = threading.Event()

    def hold_the_capture(record):     # the VM is paused now: the lock goes while it is
        if record['method'] == 'POST' and record['path'].endswith('/snapshots'):
            refusing_refreshes.set()
            for _ in range(500):
                if tool.STOP.lost is not None:
                    lost.set()
                    return
                time.sleep(0.01)

    world.a.on_request = world.b.on_request = hold_the_capture
    try:
        result = world.run('vm', 'create', '-vm', 100, '-pause')
    finally:
        world.a.on_request = world.b.on_request = None

    assert lost.is_set() and result.code == 1, result.err
    # VM 100 is on both volumes: whichever lock's refresh pmxcfs refused first
    locks = [world.cluster_lock(cluster_dir, storage) for storage in ('ONTAP01', 'ONTAP02')]
    (lost,) = [lock for lock in locks if error_lines(result)[-1].startswith(
        f'ERROR: the cluster lock {lock} may be lost: refreshing it failed')]
    assert vm.status == 'running' and vm.qmpstatus == 'running'      # resumed all the same
    assert world.clones(world.vol1, 100) == [] and world.clones(world.vol2, 100) == []
    assert not world.pve_requests('PUT')
    # no capture deleted, no lock given back: another run may hold it by now
    assert [name for name in world.vol1.snapshots if name.startswith(tool.Names.CAPTURE_PREFIX)]
    assert lost.is_dir()
