"""vm restore -as-new NEWID: a new VM from a VM snapshot or a storage snapshot, also of a VM PVE
no longer has: its disks cloned from the snapshot's copies under new names, its saved config as new
hardware (no MAC address, a new SMBIOS uuid and vmgenid, not started on boot); refused before
anything changes when it cannot copy every disk. Case tables for the pure parts first, then stories
against the test world. vm restore of the VM itself is test_vm_restore.py's."""


import pytest
from world import (
    MAC,
    ORIGINAL_STAMP,
    SMBIOS_UUID,
    VMGENID,
    destroy_vm,
    pve_reads_nfs_directories,
    seed_history,
)

import pve_ontap_snapshot as tool

# -- the pure parts

@pytest.mark.parametrize('value, without', [
    (f'virtio={MAC},bridge=vmbr0,firewall=1', 'virtio,bridge=vmbr0,firewall=1'),
    (f'model=e1000,macaddr={MAC},bridge=vmbr1', 'model=e1000,bridge=vmbr1'),
    ('virtio,bridge=vmbr0', 'virtio,bridge=vmbr0'),
])
def test_a_new_vm_gets_its_nics_without_their_mac_addresses(value, without):
    assert tool.Guest.without_mac(value) == without


@pytest.mark.parametrize('value, with_new', [
    ('ONTAP01:101/vm-101-disk-0.raw,size=1G', 'ONTAP01:201/vm-201-disk-0.raw,size=1G'),
    ('file=ONTAP01:101/vm-101-disk-0.raw,size=1G', 'file=ONTAP01:201/vm-201-disk-0.raw,size=1G'),
    ('ONTAP01:101/vm-101-disk-0.raw', 'ONTAP01:201/vm-201-disk-0.raw'),
])
def test_a_drive_gets_another_volume_and_keeps_its_options(value, with_new):
    assert tool.Guest.with_volume(value, 'ONTAP01:201/vm-201-disk-0.raw') == with_new


def test_a_new_vm_config_is_the_saved_one_as_new_hardware():
    saved = {'name': 'db', 'memory': '1024', 'onboot': '1', 'vmgenid': VMGENID, 'digest': 'x', 'lock': 'backup',
             'smbios1': f'uuid={SMBIOS_UUID},manufacturer=QEMU', 'net0': f'virtio={MAC},bridge=vmbr0',
             'scsi0': 'ONTAP01:101/vm-101-disk-0.raw,size=1G', 'unused0': 'ONTAP01:101/vm-101-disk-9.raw',
             'ide2': 'ONTAP01:101/vm-101-cloudinit.qcow2,media=cdrom', 'ide0': 'local:iso/d.iso,media=cdrom'}
    config = tool.RestoreRules.new_vm_config(saved, {'scsi0': 'ONTAP01:201/vm-201-disk-0.raw'}, 'new-uuid')
    assert config == {'name': 'db', 'memory': '1024', 'smbios1': 'manufacturer=QEMU,uuid=new-uuid',
                      'net0': 'virtio,bridge=vmbr0', 'scsi0': 'ONTAP01:201/vm-201-disk-0.raw,size=1G',
                      'ide2': 'ONTAP01:cloudinit,media=cdrom', 'ide0': 'local:iso/d.iso,media=cdrom'}


def test_new_disk_names_skip_the_numbers_already_in_the_directory():
    disks = [tool.Disk('scsi0', 'ONTAP01', 'ONTAP01:101/vm-101-disk-3.qcow2', 'images/101/vm-101-disk-3.qcow2'),
             tool.Disk('scsi1', 'ONTAP02', 'ONTAP02:101/vm-101-disk-0.raw', 'images/101/vm-101-disk-0.raw')]
    assert tool.RestoreRules.new_disk_paths(disks, 201, ['vm-201-disk-0.raw', 'other']) == {
        'scsi0': 'images/201/vm-201-disk-1.qcow2', 'scsi1': 'images/201/vm-201-disk-2.raw'}


# -- the new VM

def test_as_new_brings_back_a_destroyed_vm_whose_disks_hold_the_snapshots_bytes(world, vm101):
    # not registered as its unused disks, the clones outlive the VM (registered ones go with it)
    stamp = world.vm_snapshot(101, '-no-register')
    snapshot_bytes = world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{stamp}.raw').read_bytes()
    destroy_vm(world, 101, 'pve2')
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)
    assert result.code == 0, result.err
    new = world.pve.vm(201)
    assert new.status == 'stopped' and new.config['name'] == 'db' and 'onboot' not in new.config
    assert new.config['scsi0'].startswith('ONTAP01:201/vm-201-disk-0.raw,')
    assert world.disk(world.vol1, 201, 'vm-201-disk-0.raw').read_bytes() == snapshot_bytes
    assert MAC not in new.config['net0'] and new.config['net0'].startswith('virtio=')
    assert new.config['vmgenid'] != VMGENID and SMBIOS_UUID not in new.config['smbios1']
    assert 'uuid=' in new.config['smbios1']


def test_as_new_copies_a_vm_from_a_storage_snapshot_and_leaves_the_vm_as_it_is(world, vm101):
    # its config as earlier builds recorded it: a .conf file of its own
    saved = tool.Guest.config_text(vm101.config).encode()
    record = world.vol1.path / tool.Names.STORAGE_RECORD_DIR / 'vm-101.conf'
    record.parent.mkdir()
    record.write_bytes(saved)
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_2026-01-01_00:00:00+0000')
    snapshot_bytes = world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes()
    world.disk(world.vol1, 101, 'vm-101-disk-0.raw').write_bytes(b'changed since')
    before = dict(vm101.config)
    result = world.run('vm', 'restore', '-vm', 101, '-storage-snapshot', 'proxmox_snapshot_2026-01-01_00:00:00+0000',
                       '-as-new', 202)
    assert result.code == 0, result.err
    assert world.disk(world.vol1, 202, 'vm-202-disk-0.raw').read_bytes() == snapshot_bytes
    assert world.pve.vm(202).config['memory'] == '1024' and MAC not in world.pve.vm(202).config['net0']
    assert vm101.config == before and world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == b'changed since'


def test_as_new_brings_back_a_destroyed_vm_from_the_storage_snapshot_that_recorded_it(world, vm101):
    result = world.run('storage', 'create', '-storage', 'ONTAP01')
    assert result.code == 0, result.err
    (name,) = world.vol1.snapshots
    snapshot_bytes = world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes()
    destroy_vm(world, 101, 'pve2')

    result = world.run('vm', 'restore', '-vm', 101, '-storage-snapshot', name, '-as-new', 203)

    assert result.code == 0, result.err
    new = world.pve.vm(203)
    assert new.status == 'stopped' and new.config['name'] == 'db' and new.config['memory'] == '1024'
    assert world.disk(world.vol1, 203, 'vm-203-disk-0.raw').read_bytes() == snapshot_bytes
    assert MAC not in new.config['net0'] and 'onboot' not in new.config


# -- refused

def test_as_new_refuses_an_id_pve_already_uses(world, vm101):
    stamp = world.vm_snapshot(101)
    before = world.state()
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 100)
    assert result.code == 1
    assert 'VM 100 web already exists on node pve1' in result.err.splitlines()[-1]
    assert world.state() == before


def test_as_new_refuses_a_gone_vm_whose_snapshot_saved_no_config(world, vm101):
    live = world.disk(world.vol1, 101, 'vm-101-disk-0.raw')
    world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{ORIGINAL_STAMP}.raw').write_bytes(live.read_bytes())
    destroy_vm(world, 101, 'pve2')
    before = world.state()
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', ORIGINAL_STAMP, '-as-new', 201)
    assert result.code == 1
    assert 'VM 101 no longer exists in PVE, and snapshot' in result.err.splitlines()[-1]
    assert 'holds no saved config' in result.err.splitlines()[-1]
    assert world.state() == before


def test_as_new_refuses_a_vm_whose_disk_it_cannot_copy(world):
    seed_history(world)
    pve_reads_nfs_directories(world)
    before = world.state()
    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', ORIGINAL_STAMP, '-as-new', 300)
    assert result.code == 1
    error = result.err.splitlines()[-1]
    assert 'VM 300 would lack disks of VM 100: scsi1 (local-lvm:vm-100-disk-3: storage local-lvm' in error
    assert 'no saved config' in result.err     # the warning: VM 100's current config stands in
    assert world.state() == before and world.pve.vm(300) is None


def test_as_new_refuses_a_qcow2_disk_whose_pve_snapshots_are_a_volume_chain(world):
    world.pve.storages['ONTAP01']['snapshot-as-volume-chain'] = 1
    world.pve.vm(100).config['parent'] = 'before-update'      # PVE 9: its snapshots are snap-* files
    stamp = world.vm_snapshot(100, '-no-register')
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', stamp, '-as-new', 301)

    assert result.code == 1
    line = result.err.splitlines()[-1]
    assert line.startswith('ERROR: VM 301 would lack disks of VM 100: scsi0 (ONTAP01:100/vm-100-disk-2.qcow2: a qcow2 '
                           'disk with PVE snapshots as a volume chain'), line
    assert world.state() == before


def test_a_create_that_pve_refuses_takes_its_clones_back(world, vm101):
    stamp = world.vm_snapshot(101)
    world.pve.fail('POST', '/nodes/pve2/qemu', 500, 'unable to create VM 201 - boom')
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)
    assert result.code == 1
    assert 'VM 201 not created' in result.err.splitlines()[-1] and 'removed the 1 clone(s)' in result.err
    assert world.files(world.vol1, 201) == [] and world.pve.vm(201) is None
