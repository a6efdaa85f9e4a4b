"""A storage snapshot says what it holds: storage create writes a manifest (the config in it) of
every guest with a disk on the storage into pve-ontap-snapshot/ of the volume just before the
snapshot, and storage list shows how many guests each snapshot holds and how consistent."""

import json
import re

import pytest
from world import OLD_SNAPSHOT, add_container, error_lines, with_running_guests

import pve_ontap_snapshot as tool


def live_records(world):
    folder = world.vol1.path / tool.Names.STORAGE_RECORD_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def snapshot_records(world, name):
    """{file name: bytes} in the snapshot's pve-ontap-snapshot/, as the emulator keeps the snapshot."""
    folder = world.vol1.snapshots[name].path / tool.Names.STORAGE_RECORD_DIR
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else None


def config_in(record):
    """The config a manifest (bytes) holds, as PVE holds it."""
    return json.loads(record)['config'].encode('utf-8', 'surrogateescape')


def consistencies(records):
    return {name.split('.')[0]: name.split('.')[1] for name in records if name.endswith('.manifest.json')}


def test_each_storage_snapshot_holds_the_manifest_and_config_of_every_guest_on_it(world):
    add_container(world)

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    records = snapshot_records(world, name)
    # VM 100 and 101 and CT 200 have disks on ONTAP01; VM 102 only on local-lvm
    assert sorted(records) == ['ct-200.atomic.manifest.json', 'vm-100.running.manifest.json',
                               'vm-101.shutdown.manifest.json']
    assert sorted(records) == live_records(world)
    assert config_in(records['vm-101.shutdown.manifest.json']) == (
        b'memory: 1024\nname: db\nscsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G\n')
    container = json.loads(records['ct-200.atomic.manifest.json'])
    assert 'rootfs: ONTAP01:200/vm-200-disk-0.raw,size=8G\n' in container.pop('config')
    assert container.pop('signature').startswith('hmac-sha256:')
    assert container == {
        'tool': 'pve-ontap-snapshot', 'version': tool.tool_version(), 'vmid': 200, 'name': 'files', 'node': 'pve2',
        'stamp': name, 'consistency': 'atomic', 'config_from': 'api',
        'identity': {'ctime': None, 'smbios_uuid': None},
        'disks': [{'key': 'rootfs', 'volid': 'ONTAP01:200/vm-200-disk-0.raw',
                   'clone': f'.snapshot/{name}/images/200/vm-200-disk-0.raw', 'size': 8 * 2**30,
                   'storage': 'ONTAP01', 'cluster': world.a.host, 'svm': 'svm1', 'volume': 'proxmox_storage01',
                   'format': 'raw'}]}
    # every ONTAP disk of VM 100, those on ONTAP02 (not in this snapshot) without a path in it
    disks = {d['key']: d for d in json.loads(records['vm-100.running.manifest.json'])['disks']}
    assert sorted(disks) == ['efidisk0', 'ide0', 'sata0', 'scsi0', 'tpmstate0', 'virtio0']
    assert disks['scsi0']['clone'] == f'.snapshot/{name}/images/100/vm-100-disk-2.qcow2'
    assert (disks['sata0']['clone'], disks['sata0']['cluster'], disks['sata0']['volume']) == (
        None, world.b.host, 'proxmox_storage02')
    # the clone paths name real files of the snapshot
    assert (world.vol1.snapshots[name].path / 'images/200/vm-200-disk-0.raw').read_bytes() == \
        world.disk(world.vol1, 200, 'vm-200-disk-0.raw').read_bytes()


@pytest.mark.parametrize('flags, expected', [
    ((), {'vm-100': 'running', 'vm-101': 'atomic', 'vm-103': 'atomic', 'ct-200': 'atomic'}),
    (('-freeze',), {'vm-100': 'frozen', 'vm-101': 'frozen', 'vm-103': 'atomic', 'ct-200': 'atomic'}),
    (('-pause',), {'vm-100': 'frozen', 'vm-101': 'frozen', 'vm-103': 'paused', 'ct-200': 'atomic'})])
def test_each_guests_manifest_says_how_it_was_held_for_the_snapshot(world, flags, expected):
    with_running_guests(world)

    result = world.run('storage', 'create', '-storage', 'ONTAP01', *flags)

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    assert consistencies(snapshot_records(world, name)) == expected


def test_a_guest_moved_away_is_no_longer_in_the_next_snapshot(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    world.pve.vm(101).config['scsi0'] = 'local-lvm:vm-101-disk-0,size=1G'
    world.pve.vm(100).status = 'stopped'

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    first, second = world.storage_snapshots()
    assert sorted(snapshot_records(world, first)) == ['vm-100.running.manifest.json', 'vm-101.shutdown.manifest.json']
    assert sorted(snapshot_records(world, second)) == ['vm-100.shutdown.manifest.json']
    assert json.loads(snapshot_records(world, second)['vm-100.shutdown.manifest.json'])['stamp'] == second


def test_storage_list_shows_how_many_guests_each_snapshot_holds_and_how_consistent(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, create_time='2024-03-13T14:42:47+00:00')
    add_container(world)
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (_, name) = world.storage_snapshots()

    text = world.run('-loglevel', 'warn', 'storage', 'list', '-storage', 'ONTAP01')
    data = world.json('storage', 'list', '-storage', 'ONTAP01')

    assert text.code == 0 and text.err == ''
    header, old, new = text.out.splitlines()
    assert header.split()[4:6] == ['GUESTS', 'CONSISTENCY']
    # NAME CREATED SIZE (a number and its unit) LABEL GUESTS CONSISTENCY COMMENT
    assert old.split()[5:7] == ['-', 'unknown']
    assert re.match(r'3 +1 running, 1 atomic, 1 shutdown +Snapshot of', new.split(maxsplit=5)[5])
    assert [s['name'] for s in data] == [OLD_SNAPSHOT, name]
    assert data[0]['guests'] is None
    assert data[1]['guests'] == [{'vmid': 100, 'type': 'qemu', 'consistency': 'running'},
                                 {'vmid': 101, 'type': 'qemu', 'consistency': 'shutdown'},
                                 {'vmid': 200, 'type': 'lxc', 'consistency': 'atomic'}]


def test_a_snapshot_whose_records_cannot_be_read_lists_as_unknown_with_a_warning(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    world.a.fail('GET', r'snapshot.*pve-ontap-snapshot', status=403, code='6', message='not permitted')

    result = world.run('-output', 'json', 'storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert json.loads(result.out)[0]['guests'] is None
    assert 'WARNING: storage ONTAP01: what 1 snapshot(s) hold could not be read, shown as unknown' in result.err


def test_a_record_not_written_still_leaves_the_snapshot_and_fails_naming_it(world):
    world.a.fail('POST', r'vm-101.*manifest', status=500, message='disk quota exceeded')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 1
    (name,) = world.storage_snapshots()
    assert error_lines(result) == [(
        f'ERROR: storage ONTAP01: snapshot {name} was made, but not recorded in pve-ontap-snapshot/ on ONTAP01: '
        f'the record of VM 101 (ONTAP {world.a.host}: write pve-ontap-snapshot/vm-101.shutdown.manifest.json in '
        'volume proxmox_storage01: disk quota exceeded)')]
    assert sorted(snapshot_records(world, name)) == ['vm-100.running.manifest.json']


def test_a_record_whose_answer_was_lost_is_read_back(world):
    world.a.lose_answer('POST', r'vm-101.*manifest')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    assert config_in(snapshot_records(world, name)['vm-101.shutdown.manifest.json']).startswith(b'memory: 1024\n')


def test_a_record_replaced_is_whole_even_when_shorter(world):
    world.pve.vm(101).config['description'] = 'a long description ' * 20
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    del world.pve.vm(101).config['description']

    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0

    _, second = world.storage_snapshots()
    assert config_in(snapshot_records(world, second)['vm-101.shutdown.manifest.json']) == (
        b'memory: 1024\nname: db\nscsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G\n')


def test_a_dry_run_says_which_records_it_would_write_and_writes_none(world):
    before = world.state()

    result = world.run('-dry-run', 'storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert world.state() == before
    lines = [line.split(' (')[0] for line in result.out.splitlines()]
    assert lines[:3] == ['would create the directory pve-ontap-snapshot in volume proxmox_storage01',
                         'would write pve-ontap-snapshot/vm-100.running.manifest.json in volume proxmox_storage01',
                         'would write pve-ontap-snapshot/vm-101.shutdown.manifest.json in volume proxmox_storage01']
    assert lines[3].startswith('would create snapshot proxmox_snapshot_')


@pytest.mark.parametrize('guest, disks, how, expected', [
    ({'status': 'running'}, [tool.Disk('scsi0', 'S', 'S:1/a.raw')], 'freeze', 'frozen'),
    ({'status': 'running'}, [tool.Disk('scsi0', 'S', 'S:1/a.raw')], 'pause', 'paused'),
    ({'status': 'stopped'}, [tool.Disk('scsi0', 'S', 'S:1/a.raw')], None, 'shutdown'),
    ({'status': 'running'}, [tool.Disk('scsi0', 'S', 'S:1/a.raw')], None, 'atomic'),
    ({'status': 'running'}, [tool.Disk('scsi0', 'S', 'S:1/a.raw'), tool.Disk('scsi1', 'T', 'T:1/b.raw')], None,
     'running'),
    ({'status': 'running'}, [], None, 'running')])
def test_consistency_of_a_guest_in_a_storage_snapshot(guest, disks, how, expected):
    assert tool.Consistency.of_storage_snapshot(guest, disks, 'S', how) == expected


@pytest.mark.parametrize('names, expected', [
    ([], []),
    (['vm-100.conf'], []),
    (['ct-7.conf', 'ct-7.paused.manifest.json', 'vm-10.frozen.manifest.json', 'notes.txt', 'vm-9.bogus.manifest.json'],
     [{'vmid': 7, 'type': 'lxc', 'consistency': 'paused'}, {'vmid': 10, 'type': 'qemu', 'consistency': 'frozen'}])])
def test_recorded_guests_come_from_manifest_names(names, expected):
    assert tool.Names.recorded_guests(names) == expected


@pytest.mark.parametrize('words, expected', [
    ([], '-'), (['running'], '1 running'),
    (['running', 'frozen', 'frozen', 'frozen'], '3 frozen, 1 running'),
    (['shutdown', 'atomic'], '1 atomic, 1 shutdown')])
def test_consistency_summary_counts_most_first(words, expected):
    assert tool.Consistency.summary([{'consistency': word} for word in words]) == expected


def test_a_containers_raw_lxc_keys_go_last_as_pve_writes_them():
    config = {'hostname': 'ct', 'lxc': [['lxc.apparmor.profile', 'unconfined']], 'digest': 'x'}
    assert tool.Guest.config_text_of({'type': 'lxc'}, config) == 'hostname: ct\nlxc.apparmor.profile: unconfined\n'
