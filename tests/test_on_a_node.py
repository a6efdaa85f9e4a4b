"""Running on a PVE node as root: `qm disk rescan` registers clones and `umount` cleans up
a removed clone storage. Fake `qm` and `umount` executables, where PROGRAMS names them, record
their calls; the one probe of the machine (root, qm, /etc/pve) answers "node pve1"."""


import pytest

import pve_ontap_snapshot as tool

OLD = 'proxmox_snapshot_2024-03-13_14:42:47+0000'


@pytest.fixture
def node(monkeypatch, tmp_path):
    """Make this run node pve1's; returns a function reading the recorded calls."""
    bin_dir, calls = tmp_path / 'bin', tmp_path / 'calls'
    bin_dir.mkdir()
    (bin_dir / 'qm').write_text(f'#!/bin/sh\necho "qm $*" >> {calls}\n')
    # umount refuses a busy mount unless asked to detach it lazily
    (bin_dir / 'umount').write_text(f'#!/bin/sh\necho "umount $*" >> {calls}\n'
                                    'case "$*" in *-l*) exit 0;; *) echo busy >&2; exit 32;; esac\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    monkeypatch.setattr(tool.Node, 'PROGRAMS', {name: str(bin_dir / name) for name in tool.Node.PROGRAMS})
    monkeypatch.setattr(tool.Node, 'name', lambda: 'pve1')
    return lambda: calls.read_text().splitlines() if calls.exists() else []


def test_clones_of_a_vm_on_this_node_are_registered_by_qm_disk_rescan(world, node):
    before = dict(world.pve.vm(100).pending)

    assert world.run('vm', 'create', '-vm', 100).code == 0

    assert node() == ['qm disk rescan --vmid 100']
    assert world.pve.vm(100).pending == before
    assert not world.pve_requests('PUT')


def test_a_vm_on_another_node_is_registered_through_the_api(world, node):
    assert world.run('vm', 'create', '-vm', 101).code == 0
    assert node() == []
    assert [k for k in world.pve.vm(101).config if k.startswith('unused')] == ['unused0']


def test_mount_on_this_node_and_unmount_detaches_the_nfs_mount(world, node):
    world.a.add_snapshot('proxmox_storage01', OLD)
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD).code == 0
    assert world.pve.storage_config('ONTAP01-CLONE')['nodes'] == 'pve1'
    assert not world.pve_requests(path='*/cluster/status')

    result = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE')

    assert result.code == 0, result.err
    assert node() == ['umount -- /mnt/pve/ONTAP01-CLONE', 'umount -f -l -- /mnt/pve/ONTAP01-CLONE']
    assert world.a.volume('proxmox_storage01_clone') is None
