"""vm restore and the saved config: the diff it shows, -with-config, and -as-new (a new VM from a
VM snapshot or a storage snapshot, also of a VM PVE no longer has). Case tables for the pure
parts first, then stories against the test world."""


import pytest
from world import (
    ORIGINAL_STAMP,
    destroy_vm,
    drop_pve_request,
    error_lines,
    lose_pve_answer,
    pve_detaches_disks,
    pve_reads_nfs_directories,
    seed_history,
    write_disk,
)

import pve_ontap_snapshot as tool

MAC = 'BC:24:11:AA:BB:CC'
SMBIOS_UUID = '11111111-2222-3333-4444-555555555555'
VMGENID = '66666666-7777-8888-9999-000000000000'


# -- the pure parts

@pytest.mark.parametrize('text, config', [
    ('memory: 1024\nscsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G\n',
     {'memory': '1024', 'scsi0': 'ONTAP01:101/vm-101-disk-0.raw,size=1G'}),
    # the description: # lines, percent-decoded as UTF-8
    ('#web server%3A front\n#caf%C3%A9\nname: web\n', {'description': 'web server: front\ncafé', 'name': 'web'}),
    # a snapshot's section and [PENDING] are not the current config
    ('cores: 2\nparent: before\n\n[before]\ncores: 1\n', {'cores': '2', 'parent': 'before'}),
    ('cores: 2\n[PENDING]\ncores: 4\n', {'cores': '2'}),
    # blanks around the value go, as PVE's parser drops them
    ('name:   web  \n\n', {'name': 'web'}),
    ('', {}),
])
def test_a_saved_config_text_is_read_as_pve_reads_it(text, config):
    assert tool.Guest.parse_config_text(text) == config


@pytest.mark.parametrize('config', [
    {'memory': '1024', 'net0': f'virtio={MAC},bridge=vmbr0', 'description': 'line one\nline: two\n100% ü'},
    {'scsi0': 'ONTAP01:101/vm-101-disk-0.raw,size=1G', 'boot': 'order=scsi0'},
    {'name': 'only'},
])
def test_a_config_written_by_config_text_reads_back_the_same(config):
    assert tool.Guest.parse_config_text(tool.Guest.config_text(dict(config, digest='abc'))) == config


@pytest.mark.parametrize('current, saved, changes, deletes', [
    # a changed key is set, a key the snapshot lacks is deleted
    ({'memory': '4096', 'cores': '2'}, {'memory': '1024'}, {'memory': '1024'}, ['cores']),
    # a disk added since is deleted (PVE keeps its file as unusedN); unusedN entries are never touched
    ({'scsi0': 'A:1/a.raw', 'scsi1': 'A:1/b.raw', 'unused0': 'A:1/c.raw'}, {'scsi0': 'A:1/a.raw', 'unused0': 'A:1/d.raw'},
     {}, ['scsi1']),
    # bookkeeping is neither put back nor deleted
    ({'digest': 'x', 'lock': 'backup', 'meta': 'ctime=1'}, {'parent': 'snap', 'vmstate': 'A:1/s.raw'}, {}, []),
    # integers from the API compare as the saved text
    ({'memory': 1024}, {'memory': '1024'}, {}, []),
])
def test_putting_a_config_back_is_one_change_that_never_deletes_an_unused_disk(current, saved, changes, deletes):
    assert tool.RestoreRules.change(current, saved) == (changes, deletes)


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


# -- stories

@pytest.fixture
def vm101(world):
    """VM 101 with a NIC, an SMBIOS uuid, a vmgenid and onboot, as PVE makes VMs."""
    world.pve.vm(101).config.update(net0=f'virtio={MAC},bridge=vmbr0', smbios1=f'uuid={SMBIOS_UUID}', vmgenid=VMGENID,
                                    onboot='1', name='db')
    pve_reads_nfs_directories(world)
    return world.pve.vm(101)


def test_a_restore_shows_how_the_config_differs_and_leaves_it_as_it_is(world, vm101):
    stamp = world.vm_snapshot(101)
    vm101.config['memory'] = '4096'
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-yes')
    assert result.code == 0, result.err
    assert '-memory: 4096' in result.err and '+memory: 1024' in result.err
    assert vm101.config['memory'] == '4096'


def test_a_restore_plan_comes_as_json_on_request(world, vm101):
    stamp = world.vm_snapshot(101)
    vm101.config['cores'] = '8'
    result = world.run('-output', 'json', '-dry-run', 'vm', 'restore', '-vm', 101, '-snapshot', stamp)
    assert result.code == 0, result.err
    plan = tool.json.loads(result.out[:result.out.index('\n}') + 2])
    assert plan['config']['saved'] and '-cores: 8' in plan['config']['diff']
    assert [disk['key'] for disk in plan['disks']] == ['scsi0'] and vm101.config['cores'] == '8'


def test_with_config_puts_the_saved_config_back_and_keeps_a_disk_added_since_as_unused(world, vm101):
    pve_detaches_disks(world.pve)
    stamp = world.vm_snapshot(101)
    added = world.disk(world.vol1, 101, 'vm-101-disk-1.raw')
    added.write_bytes(b'added since')
    vm101.config.update(memory='4096', scsi1='ONTAP01:101/vm-101-disk-1.raw,size=1K')
    del vm101.config['onboot']
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes')
    assert result.code == 0, result.err
    assert vm101.config['memory'] == '1024' and vm101.config['onboot'] == '1'
    unused = [value for key, value in vm101.config.items() if key.startswith('unused')]
    assert 'scsi1' not in vm101.config and 'ONTAP01:101/vm-101-disk-1.raw' in unused
    assert f'ONTAP01:101/vm-101-disk-0-snapshot-{stamp}.raw' in unused     # registered by vm create, kept
    assert added.read_bytes() == b'added since'


def test_the_pre_restore_snapshot_undoes_a_config_put_back_too(world, vm101):
    stamp = world.vm_snapshot(101, '-no-register')
    vm101.config['memory'] = '4096'
    assert world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes').code == 0
    assert str(vm101.config['memory']) == '1024'
    listed = world.vm_snapshots(101)
    (undo,) = [s for s in listed if s['kind'] == 'pre-restore']
    assert undo['consistency'] == 'shutdown'

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', undo['stamp'], '-with-config', '-yes')

    assert result.code == 0, result.err
    assert str(vm101.config['memory']) == '4096'


def test_with_config_is_refused_for_a_snapshot_that_saved_no_config(world):
    seed_history(world)
    before = world.state()
    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', ORIGINAL_STAMP, '-with-config', '-shutdown', '-yes')
    assert result.code == 1
    assert 'holds no saved config' in result.err.splitlines()[-1]
    assert world.state() == before


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


def test_the_cloud_init_password_is_never_saved_put_back_or_copied(world, vm101):
    vm101.config['cipassword'] = '$5$salt$hash'      # PVE's API shows it masked; fakepve does not
    stamp = world.vm_snapshot(101, '-no-register')
    (record,) = world.records(world.vol1, 101)
    assert 'salt' not in (world.vol1.path / 'images/101' / record).read_text()
    vm101.config['cipassword'] = '$5$other$hash'

    restored = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes')
    copied = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)

    assert restored.code == 0 and copied.code == 0, restored.err + copied.err
    assert 'cipassword' not in restored.err and vm101.config['cipassword'] == '$5$other$hash'
    assert 'cipassword' not in world.pve.vm(201).config
    assert "VM 201: its cloud-init password is not copied" in copied.err


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


def test_a_create_whose_task_cannot_be_followed_leaves_its_disks_and_says_so(world, vm101):
    stamp = world.vm_snapshot(101)
    lose_pve_answer(world.pve, 'GET', '/status')        # every read of a task's status

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert 'could not be followed' in line and 'its disks are left' in line, line
    # the create went through: nothing of it was taken back on a guess
    assert world.pve.vm(201) is not None and world.files(world.vol1, 201) == ['vm-201-disk-0.raw']


def test_a_saved_config_that_cannot_be_read_leaves_a_plain_restore_to_go_on(world, vm101):
    stamp = world.vm_snapshot(101)
    world.disk(world.vol1, 101, 'vm-101-disk-0.raw').write_bytes(b'changed since')
    world.a.fail('GET', r'snapshot-.*manifest\.json', status=500, message='injected', times=None)

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-yes')
    refused = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes')

    assert result.code == 0, result.err
    assert 'could not be read' in result.err
    assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() != b'changed since'
    assert refused.code == 1 and 'injected' in refused.err.splitlines()[-1]


def test_a_config_change_whose_answer_is_lost_leaves_the_vm_down_unless_it_is_read_back(world, vm101):
    stamp = world.vm_snapshot(101)
    vm101.status = vm101.qmpstatus = 'running'
    vm101.config['memory'] = '4096'
    lose_pve_answer(world.pve, 'PUT', '/qemu/101/config')
    # the change is carried out: read back, it is the saved config, and the VM runs again
    done = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-shutdown', '-yes')
    assert done.code == 0, done.err
    assert str(vm101.config['memory']) == '1024' and vm101.status == 'running'


def test_a_config_change_of_unknown_outcome_leaves_the_vm_stopped_and_says_so(world, vm101):
    stamp = world.vm_snapshot(101)
    vm101.status = vm101.qmpstatus = 'running'
    vm101.config['memory'] = '4096'
    drop_pve_request(world.pve, 'PUT', '/qemu/101/config')

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-shutdown', '-yes')

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert 'restored from' in line and 'whether its config was put back is unknown' in line, line
    assert vm101.status == 'stopped' and str(vm101.config['memory']) == '4096'


def test_a_create_whose_answer_is_lost_is_read_back(world, vm101):
    stamp = world.vm_snapshot(101)
    lose_pve_answer(world.pve, 'POST', '/nodes/pve2/qemu')
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)
    assert result.code == 0, result.err
    assert 'the answer to its create was lost, but it exists' in result.err
    assert world.pve.vm(201) is not None and world.files(world.vol1, 201) == ['vm-201-disk-0.raw']


# -- a disk moved since (Move Disk, its source kept as an unused disk)

def move_disk_of_101(world, vm101):
    """Move Disk of VM 101's scsi0 from ONTAP01 to ONTAP02, keeping the source as unused0, as PVE does
    (qemu-server API2/Qemu.pm move_vm_disk, delete=0): the new file is scsi0 from then on."""
    old = world.disk(world.vol1, 101, 'vm-101-disk-0.raw')
    old.write_bytes(b'written after the snapshot, before the move')
    new = write_disk(world.vol2, 101, 'vm-101-disk-0.raw')
    new.write_bytes(b'written after the move')
    vm101.config.update(scsi0='ONTAP02:101/vm-101-disk-0.raw,size=1G', unused0='ONTAP01:101/vm-101-disk-0.raw')
    return old, new


def test_with_config_puts_a_moved_disk_back_on_its_old_file_from_the_snapshots_copy(world, vm101):
    pve_detaches_disks(world.pve)
    stamp = world.vm_snapshot(101, '-no-register')
    taken = world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{stamp}.raw').read_bytes()
    old, new = move_disk_of_101(world, vm101)

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes')

    assert result.code == 0, result.err
    assert old.read_bytes() == taken and new.read_bytes() == b'written after the move'
    assert vm101.config['scsi0'].startswith('ONTAP01:101/vm-101-disk-0.raw')
    assert 'ONTAP02:101/vm-101-disk-0.raw' in [v for k, v in vm101.config.items() if k.startswith('unused')]
    assert ('stay as unused disks: scsi0 (ONTAP02:101/vm-101-disk-0.raw)') in result.err
    assert 'disk scsi0 was ONTAP01:101/vm-101-disk-0.raw when snapshot' in result.err


def test_a_plain_restore_writes_a_moved_disks_copy_onto_no_other_file(world, vm101):
    stamp = world.vm_snapshot(101, '-no-register')
    old, new = move_disk_of_101(world, vm101)

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-yes')

    assert result.code == 1
    assert (f'disk scsi0 was ONTAP01:101/vm-101-disk-0.raw when snapshot {stamp} was taken and is '
            'ONTAP02:101/vm-101-disk-0.raw now: its copy is written onto no other file') in result.err
    assert error_lines(result)[0].endswith(f'snapshot {stamp} holds none of its current disks')
    assert new.read_bytes() == b'written after the move'
    assert old.read_bytes() == b'written after the snapshot, before the move'


def test_with_config_makes_the_old_file_of_a_disk_moved_away_without_keeping_it(world, vm101):
    pve_reads_nfs_directories(world)
    stamp = world.vm_snapshot(101, '-no-register')
    taken = world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{stamp}.raw').read_bytes()
    old, new = move_disk_of_101(world, vm101)
    old.unlink()                                # moved with "delete source"
    del vm101.config['unused0']

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes')

    assert result.code == 0, result.err
    assert old.read_bytes() == taken and new.read_bytes() == b'written after the move'
    assert vm101.config['scsi0'].startswith('ONTAP01:101/vm-101-disk-0.raw')
