"""Fixtures: the world of world.py, with fakepve from its pytest plugin.

The world's two ONTAP clusters play the release `ontap_release` gives: ONTAP_RELEASE from the
environment (`ONTAP_RELEASE=9.8 pytest` runs the whole suite against 9.8), else the newest
NetApp documents. A module overrides the fixture to run its tests on several releases; a test
that counts requests is marked newest_release, and plays the newest whatever the environment says."""

import os

import pytest
import trustme
from ontap_emulator import NEWEST_RELEASE, OntapEmulator
from world import (
    MAC,
    ONTAP_B_PASSWORD,
    ONTAP_PASSWORD,
    PVE_PASSWORD,
    SMBIOS_UUID,
    VMGENID,
    PmxcfsLocks,
    World,
    add_containers,
    populate,
    pve_reads_nfs_directories,
)

import pve_ontap_snapshot as tool


@pytest.fixture(scope='session')
def ontap_ca():
    return trustme.CA()


def pytest_configure(config):
    config.addinivalue_line('markers', 'newest_release: the test counts requests as a current ONTAP release answers '
                                       'them (an older one costs a request more per field it lacks), so its clusters '
                                       'play the newest release whatever ONTAP_RELEASE says')


@pytest.fixture
def ontap_release(request):
    if request.node.get_closest_marker('newest_release'):
        return NEWEST_RELEASE
    return os.environ.get('ONTAP_RELEASE') or NEWEST_RELEASE


def served_emulator(root, password, name, ca, release=NEWEST_RELEASE):
    emu = OntapEmulator(root, password=password, cluster_name=name, ca=ca, release=release)
    emu.start()
    return emu


@pytest.fixture
def ontap_a(tmp_path, ontap_ca, ontap_release):
    emu = served_emulator(tmp_path / 'cluster-a', ONTAP_PASSWORD, 'cluster-a', ontap_ca, ontap_release)
    yield emu
    emu.stop()


@pytest.fixture
def ontap_b(tmp_path, ontap_ca, ontap_release):
    emu = served_emulator(tmp_path / 'cluster-b', ONTAP_B_PASSWORD, 'cluster-b', ontap_ca, ontap_release)
    yield emu
    emu.stop()


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    """Each test takes its node locks (-local-lock) in a directory of its own."""
    directory = tmp_path / 'locks'
    monkeypatch.setenv('PVE_ONTAP_SNAPSHOT_LOCK_DIR', str(directory))
    return directory


@pytest.fixture(autouse=True)
def cluster_dir(tmp_path, monkeypatch):
    """Each test runs as if on a PVE node: its own directory stands for /etc/pve/priv, whose
    lock/ takes the cluster-wide locks (a plain directory: mkdir fails on an existing one)."""
    directory = tmp_path / 'priv'
    directory.mkdir()
    monkeypatch.setattr(tool.Node, 'CLUSTER_DIR', str(directory))
    monkeypatch.setenv('PVE_ONTAP_SNAPSHOT_CLUSTER_DIR', str(directory))
    return directory


@pytest.fixture
def pmxcfs(cluster_dir):
    """pmxcfs's expiry of a lock whose run died, in half a second instead of 120 s."""
    with PmxcfsLocks(cluster_dir / 'lock', expiry=0.5):
        yield


@pytest.fixture
def on_pve1(monkeypatch, tmp_path):
    """This run is node pve1's, as root: the one probe of the machine (root, qm, /etc/pve) answers
    "node pve1", and fake `qm` and `umount` executables, where Node.PROGRAMS names them, record their
    calls (umount refuses a busy mount unless asked to detach it lazily). Returns a function that
    reads the calls."""
    bin_dir, calls = tmp_path / 'bin', tmp_path / 'calls'
    bin_dir.mkdir()
    (bin_dir / 'qm').write_text(f'#!/bin/sh\necho "qm $*" >> {calls}\n')
    (bin_dir / 'umount').write_text(f'#!/bin/sh\necho "umount $*" >> {calls}\n'
                                    'case "$*" in *-l*) exit 0;; *) echo busy >&2; exit 32;; esac\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    monkeypatch.setattr(tool.Node, 'PROGRAMS', {name: str(bin_dir / name) for name in tool.Node.PROGRAMS})
    monkeypatch.setattr(tool.Node, 'name', lambda: 'pve1')
    return lambda: calls.read_text().splitlines() if calls.exists() else []


@pytest.fixture
def vm101(world):
    """VM 101 with a NIC, an SMBIOS uuid, a vmgenid and onboot, as PVE makes VMs (and fakepve sees
    the disk files over NFS, as PVE does, for vm restore -as-new)."""
    world.pve.vm(101).config.update(net0=f'virtio={MAC},bridge=vmbr0', smbios1=f'uuid={SMBIOS_UUID}', vmgenid=VMGENID,
                                    onboot='1', name='db')
    pve_reads_nfs_directories(world)
    return world.pve.vm(101)


@pytest.fixture
def cts(world):
    """The world's containers (add_containers): CT 200 running on pve2, CT 201 stopped on pve1."""
    return add_containers(world)


@pytest.fixture
def world(fakepve, fakepve_cafile, ontap_a, ontap_b, tmp_path, capsys):
    fakepve.password = PVE_PASSWORD
    populate(fakepve, ontap_a, ontap_b)
    return World(fakepve, fakepve_cafile, ontap_a, ontap_b, tmp_path, capture=capsys)
