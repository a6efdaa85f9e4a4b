"""vm restore: a VM's disks back to one of its VM snapshots, or to their state in a storage
snapshot (only this VM changes), with a pre-restore undo point of what they held; -shutdown stops
and starts it again; -with-config puts its saved config back too (what the config differs in is
shown either way). A new VM from a snapshot, -as-new, is test_vm_restore_as_new.py's."""

import json

import pytest
from world import (
    FILE_CLONE,
    MAC,
    OLDER_STAMP,
    ORIGINAL_STAMP,
    VM101_DISK,
    answer_after_a_change,
    error_lines,
    live_bytes,
    make_set,
    on_a_terminal,
    pve_detaches_disks,
    pve_reads_nfs_directories,
    seed_history,
    vm100_sources,
    write_disk,
    write_qcow2,
)

import pve_ontap_snapshot as tool

OLD, OLDER = ORIGINAL_STAMP, OLDER_STAMP


# -- from a VM snapshot

def test_restore_from_a_set_brings_back_the_bytes_and_keeps_an_undo_point(world):
    sources = vm100_sources(world)
    at_snapshot = live_bytes(world, sources)
    world.pve.vm(100).status = 'stopped'
    assert world.run('vm', 'create', '-vm', 100, '-no-register').code == 0
    (stamp,) = [s['stamp'] for s in world.vm_snapshots(100)]
    for vol, name in sources:
        world.disk(vol, 100, name).write_bytes(b'written after the snapshot ' + name.encode())
    changed = live_bytes(world, sources)
    other = world.disk(world.vol1, 101, VM101_DISK).read_bytes()

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', stamp, '-yes')

    assert result.code == 0, result.err
    assert live_bytes(world, sources) == at_snapshot
    assert world.disk(world.vol1, 101, VM101_DISK).read_bytes() == other
    sets = world.vm_snapshots(100)
    assert [s['kind'] for s in sets] == ['snapshot', 'pre-restore']
    undo = {f['path'].rsplit('/', 1)[1].split('-prerestore-')[0]: f for f in sets[1]['files']}
    assert len(undo) == 6
    for vol, name in sources:
        stem, ext = name.rsplit('.', 1)
        path = world.disk(vol, 100, f'{stem}-prerestore-{sets[1]["stamp"]}.{ext}')
        assert path.read_bytes() == changed[name]
    overwrites = [r for r in world.ontap_requests(path=FILE_CLONE) if r['body']['overwrite_destination']]
    assert len(overwrites) == 6


def test_restore_with_shutdown_stops_restores_and_starts(world):
    sources = vm100_sources(world)
    made = make_set(world, 100, OLD, sources)
    order = []
    world.a.on_request = lambda r: r['path'] == '/api/storage/file/clone' and order.append(world.pve.vm(100).status)

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD, '-shutdown', '-yes')

    assert result.code == 0, result.err
    assert live_bytes(world, sources) == made
    assert world.pve.vm(100).status == 'running'
    assert set(order) == {'stopped'}
    assert world.power_actions() == ['shutdown', 'start']


def test_a_failure_on_one_disk_puts_every_disk_back(world):
    world.pve.vm(100).status = 'stopped'
    sources = vm100_sources(world)
    make_set(world, 100, OLD, sources)
    before = live_bytes(world, sources)
    files_before = {vol.name: world.files(vol, 100) for vol in (world.vol1, world.vol2)}
    world.a.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.',
                     match={'destination_path': 'images/100/vm-100-disk-2.qcow2', 'overwrite_destination': True})

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD, '-yes')

    assert result.code == 1
    assert 'every disk is as it was' in result.err and 'Clone start failed' in result.err
    assert live_bytes(world, sources) == before
    assert {vol.name: world.files(vol, 100) for vol in (world.vol1, world.vol2)} == files_before


def test_a_restore_whose_start_fails_says_the_disks_are_restored_and_the_vm_stopped(world):
    then = make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])[VM101_DISK]
    world.pve.vm(101).status = world.pve.vm(101).qmpstatus = 'running'
    world.pve.vm(101).start_error = 'kvm: Permission denied'

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', OLDER, '-shutdown', '-yes')

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith(f'ERROR: VM 101: disks scsi0 restored from snapshot {OLDER}, but VM 101 could not be '
                           'started again')
    assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == then
    assert world.pve.vm(101).status == 'stopped'


def test_a_failed_restore_and_a_failed_start_are_both_reported_and_the_disks_put_back(world):
    make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])
    live = world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes()
    world.a.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.',
                     match={'destination_path': 'images/101/vm-101-disk-0.raw'})
    world.pve.vm(101).status = world.pve.vm(101).qmpstatus = 'running'
    world.pve.vm(101).start_error = 'kvm: Permission denied'

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', OLDER, '-shutdown', '-yes')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'restore failed, every disk is as it was' in line and 'and VM 101 could not be started again' in line
    assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == live


def test_a_qcow2_copy_over_a_volume_chain_is_not_restored(world):
    """A set an earlier build took of a qcow2 disk over a PVE 9 volume chain: its copy names a
    snapshot file PVE may have merged away since, so it is not put back alone."""
    write_qcow2(world.disk(world.vol1, 100, f'vm-100-disk-2-snapshot-{OLD}.qcow2'), backing='snap-x-vm-100-disk-2.qcow2')
    for vol, name in vm100_sources(world):
        if 'disk-2' not in name:
            make_set(world, 100, OLD, [(vol, name)])
    world.pve.vm(100).status = 'stopped'
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD, '-yes')

    assert result.code == 1
    (line,) = error_lines(result)
    assert f'not restored from snapshot {OLD}, for the copy of scsi0 (images/100/vm-100-disk-2-snapshot-{OLD}.qcow2) ' \
        'stands on a PVE snapshot of it as a volume chain' in line, line
    assert world.state() == before
    assert 'complete; a qcow2 copy stands on a file it cannot keep' in world.run('vm', 'list', '-vm', 100).out


# -- from a storage snapshot

def test_restore_from_a_storage_snapshot_changes_only_this_vm(world):
    world.pve.vm(100).status = 'stopped'
    on_ontap01 = [s for s in vm100_sources(world) if s[0] is world.vol1]
    on_ontap02 = [s for s in vm100_sources(world) if s[0] is world.vol2]
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (snapshot,) = world.vol1.snapshots
    at_snapshot = live_bytes(world, on_ontap01)
    for vol, name in on_ontap01 + on_ontap02 + [(world.vol1, VM101_DISK)]:
        world.disk(vol, 101 if name == VM101_DISK else 100, name).write_bytes(b'new ' + name.encode())
    ontap02_now = live_bytes(world, on_ontap02)

    result = world.run('vm', 'restore', '-vm', 100, '-storage-snapshot', snapshot, '-yes')

    assert result.code == 0, result.err
    assert live_bytes(world, on_ontap01) == at_snapshot
    assert live_bytes(world, on_ontap02) == ontap02_now
    assert 'has no copy of disk sata0' in result.err
    assert world.disk(world.vol1, 101, VM101_DISK).read_bytes() == b'new ' + VM101_DISK.encode()
    sources = {r['body']['source_path'] for r in world.ontap_requests(path=FILE_CLONE)
               if r['body']['overwrite_destination']}
    assert sources == {f'.snapshot/{snapshot}/images/100/{name}' for _, name in on_ontap01}
    assert sorted(world.vol1.snapshots) == [snapshot]


def test_restore_from_a_storage_snapshot_that_does_not_exist_says_so(world):
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 100, '-storage-snapshot', 'proxmox_snapshot_nothing', '-yes')

    assert result.code == 1
    assert result.err.splitlines()[-1] == ('ERROR: VM 100: no storage snapshot proxmox_snapshot_nothing on ONTAP01 '
                                           '(volume proxmox_storage01), ONTAP02 (volume proxmox_storage02): see '
                                           'storage list')
    assert world.state() == before


def test_a_pre_restore_snapshots_manifest_names_only_the_copies_it_holds(world):
    """A restore copies only the disks it overwrites: from a storage snapshot of ONTAP01, not
    VM 100's disks on ONTAP02, which its pre-restore snapshot then holds no copy of."""
    world.pve.vm(100).status = 'stopped'
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (snapshot,) = world.vol1.snapshots

    result = world.run('vm', 'restore', '-vm', 100, '-storage-snapshot', snapshot, '-yes')

    assert result.code == 0, result.err
    (name,) = [name for name in world.records(world.vol1, 100) if '-prerestore-' in name]
    manifest = json.loads((world.vol1.path / 'images/100' / name).read_text())
    clones = {disk['key']: disk['clone'] for disk in manifest['disks']}
    assert {key for key, clone in clones.items() if clone is None} == {'sata0', 'virtio0'}
    copies = {f'images/100/{name}' for name in world.clones(world.vol1, 100) + world.clones(world.vol2, 100)}
    assert {clone for clone in clones.values() if clone} == copies and len(copies) == 4


# -- guests in the way

def test_restore_refuses_a_running_vm_without_shutdown(world):
    make_set(world, 100, OLD, vm100_sources(world))
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD, '-yes')

    assert result.code == 1
    assert result.err.strip() == 'ERROR: VM 100 is running: shut it down first, or add -shutdown'
    assert world.state() == before


def test_restore_of_a_locked_vm_is_refused(world):
    make_set(world, 101, OLD, [(world.vol1, VM101_DISK)])
    world.pve.snapshot_lock(101, 'backup')
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', OLD, '-yes')

    assert result.code == 1
    assert result.err.strip() == 'ERROR: VM 101 is locked (backup): try again when that is done'
    assert world.state() == before


def test_restore_of_a_suspended_vm_is_refused(world):
    make_set(world, 100, OLD, vm100_sources(world))
    vm = world.pve.vm(100)
    vm.status, vm.lock, vm.config['lock'] = 'stopped', 'suspended', 'suspended'
    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD, '-yes')
    assert result.code == 1 and 'suspended to disk' in result.err


def test_a_paused_vm_is_not_restored(world):
    make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])
    world.pve.vm(101).status, world.pve.vm(101).qmpstatus = 'running', 'paused'
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', OLDER, '-shutdown', '-yes')

    assert error_lines(result) == [('ERROR: VM 101 is paused, not running, and the tool never resumes such a VM: '
                                   'resume or stop it first')]
    assert world.state() == before


# -- the question

def test_restore_without_a_terminal_needs_yes(world):
    make_set(world, 101, OLD, [(world.vol1, VM101_DISK)])
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', OLD)

    assert result.code == 2
    assert 'not asking without a terminal; add -yes' in result.err
    assert world.state() == before


def test_a_partial_restore_names_the_disks_it_keeps_in_its_question(world):
    world.pve.vm(100).status = 'stopped'
    make_set(world, 100, OLD, vm100_sources(world)[:2])

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD)

    assert result.code == 2
    assert (f'Overwrite disks ide0, sata0 of VM 100 with snapshot {OLD} (efidisk0, scsi0, tpmstate0, virtio0 not '
            'in it: kept as they are): not asking without a terminal') in result.err


@pytest.mark.parametrize('keys, restored', [(b'y\n', True), (b'\n', False), (b'\x04', False)])
def test_restore_asks_on_a_terminal_and_only_yes_goes_ahead(world, keys, restored):
    then = make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])[VM101_DISK]
    live = world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes()

    code, out, err = on_a_terminal(world, keys, 'vm', 'restore', '-vm', 101, '-snapshot', OLDER)

    question = f'Overwrite disks scsi0 of VM 101 with snapshot {OLDER} [y/N] '
    plan = (f'vm restore puts disks scsi0 of VM 101 back to snapshot {OLDER}.\n'
            f'snapshot {OLDER} holds no saved config (made before snapshots carried one): the config stays as it is.\n')
    assert err.startswith(plan + question) and out == '', (code, out, err)
    assert 'Traceback' not in err
    if restored:
        assert code == 0, err
        assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == then
    else:
        assert (code, err) == (1, plan + question + 'ERROR: aborted: nothing changed\n')
        assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == live


def test_a_vm_started_while_the_admin_reads_the_question_is_not_restored(world):
    make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])
    live = world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes()

    def start_vm_101():
        world.pve.vm(101).status = world.pve.vm(101).qmpstatus = 'running'
    code, err = answer_after_a_change(world, start_vm_101, 'vm', 'restore', '-vm', 101, '-snapshot', OLDER)

    assert (code, err.splitlines()) == (1, ['ERROR: VM 101 is running: shut it down first, or add -shutdown'])
    assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == live


# -- the saved config: the diff, -with-config

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


@pytest.mark.parametrize('key, value, why', [
    ('memory', '2048', None), ('net0', 'virtio=BC:24:11:AA:BB:CC,bridge=vmbr0', None), ('tags', 'web', None),
    ('scsi0', 'ONTAP01:101/vm-101-disk-0.raw,size=1G', None), ('ide2', 'local:iso/d.iso,media=cdrom', None),
    ('ide2', 'none,media=cdrom', None), ('efidisk0', 'ONTAP01:101/vm-101-disk-1.raw,efitype=4m', None),
    ('scsi1', 'local-lvm:vm-101-disk-3,size=4G', None), ('ide0', 'ONTAP01:101/vm-101-cloudinit.qcow2,media=cdrom', None),
    ('serial0', 'socket', None), ('usb0', 'host=spice', None), ('usb1', 'mapping=keyboard', None),
    ('hostpci0', 'mapping=gpu,pcie=1', None),
    ('args', '-cpu host', 'only root@pam may set it'), ('hookscript', 'local:snippets/x.sh', 'only root@pam may set it'),
    ('parallel0', '/dev/parport0', 'only root@pam may set it'),
    ('scsi1', '/dev/sdb', 'a host path'), ('virtio0', 'file=/etc/shadow', 'a host path'),
    ('ide2', 'cdrom,media=cdrom', "the host's CD drive"),
    ('scsi2', 'ONTAP01:100/vm-100-disk-0.raw', 'a volume of guest 100, not of 101'),
    ('scsi3', 'ONTAP01:0,import-from=/var/lib/x.qcow2', 'it imports another file'),
    ('serial0', '/dev/ttyS0', 'a host device'), ('usb0', 'host=1d6b:0002', 'a host device'),
    ('usb0', '1-1.2', 'a host device'), ('hostpci0', '0000:01:00.0', 'a host device'),
    ('hostpci0', 'mapping=gpu,romfile=x.rom', 'a host device or ROM file'),
    ('frobnicate', '1', 'a setting unknown to this tool'),
])
def test_a_restore_applies_only_what_an_ordinary_user_may_set(key, value, why):
    found = tool.RestoreRules.setting_risk(key, value, 101)
    assert (found is None) == (why is None) and (why is None or found.startswith(why)), found


def test_putting_a_config_back_keeps_what_is_not_to_be_touched_on_either_side():
    current = {'memory': '4096', 'hookscript': 'local:snippets/mine.sh', 'scsi0': 'A:101/vm-101-disk-0.raw'}
    saved = {'memory': '1024', 'args': '-cpu host', 'scsi0': 'A:101/vm-101-disk-0.raw'}
    plan = tool.RestoreRules.plan(current, saved, 101)
    assert (plan.changes, plan.deletes) == ({'memory': '1024'}, [])
    assert plan.kept == {'args': ('-cpu host', None, 'only root@pam may set it'),
                         'hookscript': (None, 'local:snippets/mine.sh', 'only root@pam may set it')}
    allowed = tool.RestoreRules.plan(current, saved, 101, allowed={'args', 'hookscript'})
    assert (allowed.changes, allowed.deletes) == ({'memory': '1024', 'args': '-cpu host'}, ['hookscript'])
    assert allowed.allowed == {'args': '-cpu host'} and allowed.kept == {}


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
