"""A storage snapshot says what it holds: storage create writes one record, every guest's
manifest (its config in it) of the guests with a disk on the storage, over the one at the
volume's root just before the snapshot, and the snapshot's comment says how many guests it
holds and how consistent; storage list shows that, storage show -snapshot each guest."""

import json
import re

import pytest
from world import OLD_SNAPSHOT, add_container, error_lines, with_running_guests, write_pmxcfs_configs

import pve_ontap_snapshot as tool


def snapshots(world):
    return sorted(name for name in world.vol1.snapshots if name.startswith(tool.Names.STORAGE_SNAPSHOT_PREFIX))


def record_of(path):
    """{'vm-101': manifest, 'ct-200': …} of a record file (as the tool reads it: its first JSON value)."""
    if not path.exists():
        return None
    manifests = tool.Manifest.read_storage_record(path.read_bytes(), str(path))
    return {f'{"ct" if m["type"] == "lxc" else "vm"}-{m["vmid"]}': m for m in manifests}


def snapshot_record(world, name):
    return record_of(world.vol1.snapshots[name].path / tool.Names.STORAGE_RECORD)


def consistencies(record):
    return {guest: manifest['consistency'] for guest, manifest in record.items()}


def comment_of(world, name):
    return world.vol1.snapshots[name].comment


def test_each_storage_snapshot_holds_one_record_with_the_manifest_of_every_guest_on_it(world):
    add_container(world)

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    (name,) = snapshots(world)
    record = snapshot_record(world, name)
    # VM 100 and 101 and CT 200 have disks on ONTAP01; VM 102 only on local-lvm
    assert sorted(record) == ['ct-200', 'vm-100', 'vm-101']
    assert record == record_of(world.vol1.path / tool.Names.STORAGE_RECORD)
    assert comment_of(world, name) == 'Snapshot of Proxmox storage ONTAP01; guests: 1 running, 1 atomic, 1 shutdown'
    assert record['vm-101']['config'] == 'memory: 1024\nname: db\nscsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G\n'
    container = dict(record['ct-200'])
    assert 'rootfs: ONTAP01:200/vm-200-disk-0.raw,size=8G\n' in container.pop('config')
    assert container.pop('signature').startswith('hmac-sha256:')
    assert container == {
        'tool': 'pve-ontap-snapshot', 'version': tool.tool_version(), 'vmid': 200, 'type': 'lxc', 'name': 'files',
        'node': 'pve2', 'stamp': name, 'consistency': 'atomic', 'config_from': 'api',
        'identity': {'ctime': None, 'smbios_uuid': None},
        'disks': [{'key': 'rootfs', 'volid': 'ONTAP01:200/vm-200-disk-0.raw',
                   'clone': f'.snapshot/{name}/images/200/vm-200-disk-0.raw', 'size': 8 * 2**30,
                   'storage': 'ONTAP01', 'cluster': world.a.host, 'svm': 'svm1', 'volume': 'proxmox_storage01',
                   'format': 'raw'}]}
    # every ONTAP disk of VM 100; those on ONTAP02 (not in this snapshot) named, their volume not looked up
    disks = {d['key']: d for d in record['vm-100']['disks']}
    assert sorted(disks) == ['efidisk0', 'ide0', 'sata0', 'scsi0', 'tpmstate0', 'virtio0']
    assert disks['scsi0']['clone'] == f'.snapshot/{name}/images/100/vm-100-disk-2.qcow2'
    assert (disks['sata0']['clone'], disks['sata0']['storage'], disks['sata0']['volume']) == (None, 'ONTAP02', None)
    assert world.b.requests == []
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
    (name,) = snapshots(world)
    assert consistencies(snapshot_record(world, name)) == expected
    counts = tool.Names.guest_counts(comment_of(world, name))
    assert counts == {word: list(expected.values()).count(word) for word in expected.values()}


def test_a_guest_moved_away_is_no_longer_in_the_next_snapshot(world):
    world.pve.vm(101).config['description'] = 'a long description ' * 20
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    world.pve.vm(101).config['scsi0'] = 'local-lvm:vm-101-disk-0,size=1G'
    world.pve.vm(100).status = 'stopped'

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    first, second = snapshots(world)
    assert consistencies(snapshot_record(world, first)) == {'vm-100': 'running', 'vm-101': 'shutdown'}
    # written over the longer record before it: the first JSON value is the whole record
    assert consistencies(snapshot_record(world, second)) == {'vm-100': 'shutdown'}
    assert snapshot_record(world, second)['vm-100']['stamp'] == second
    assert comment_of(world, second).endswith('; guests: 1 shutdown')


def test_storage_list_reads_what_each_snapshot_holds_from_the_listing_alone(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, create_time='2024-03-13T14:42:47+00:00')
    add_container(world)
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (_, name) = snapshots(world)
    world.a.requests.clear()

    text = world.run('-loglevel', 'warn', 'storage', 'list', '-storage', 'ONTAP01')
    data = json.loads(world.run('-output', 'json', 'storage', 'list', '-storage', 'ONTAP01').out)

    assert text.code == 0 and text.err == ''
    header, old, new = text.out.splitlines()
    assert header.split()[4:6] == ['GUESTS', 'CONSISTENCY']
    # NAME CREATED SIZE (a number and its unit) LABEL GUESTS CONSISTENCY COMMENT
    assert old.split()[5:7] == ['-', 'unknown']
    assert re.match(r'3 +1 running, 1 atomic, 1 shutdown +Snapshot of', new.split(maxsplit=5)[5])
    assert [s['name'] for s in data] == [OLD_SNAPSHOT, name]
    assert (data[0]['guests'], data[0]['consistency']) == (None, None)
    assert (data[1]['guests'], data[1]['consistency']) == (3, {'running': 1, 'atomic': 1, 'shutdown': 1})
    # per run: the volume and its snapshots, nothing per snapshot
    assert [r['path'].rsplit('/', 1)[-1] for r in world.a.requests] == ['volumes', 'snapshots'] * 2


def test_storage_show_of_a_snapshot_names_each_guest_it_holds(world):
    add_container(world)
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (name,) = snapshots(world)

    text = world.run('storage', 'show', '-storage', 'ONTAP01', '-snapshot', name)
    data = json.loads(world.run('-output', 'json', 'storage', 'show', '-storage', 'ONTAP01', '-snapshot', name).out)

    assert text.code == 0, text.err
    rows = [re.split(r' {2,}', line) for line in text.out.split('\n\n')[1].splitlines()]
    assert rows == [['GUEST', 'NAME', 'NODE', 'CONSISTENCY', 'DISKS', 'SIGNED'],
                    ['VM 100', 'web', 'pve1', 'running', 'efidisk0, ide0, scsi0, tpmstate0', 'yes'],
                    ['VM 101', 'db', 'pve2', 'shutdown', 'scsi0', 'yes'],
                    ['CT 200', 'files', 'pve2', 'atomic', 'rootfs', 'yes']]
    assert data['name'] == name and [g['vmid'] for g in data['guests']] == [100, 101, 200]


def test_storage_show_reads_the_records_of_earlier_builds_and_says_where_there_are_none(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (name,) = snapshots(world)
    # as an earlier build left it: one manifest per guest in pve-ontap-snapshot/
    snapshot = world.vol1.snapshots[name].path
    record = snapshot_record(world, name)
    (snapshot / tool.Names.STORAGE_RECORD_DIR).mkdir()
    for guest, manifest in record.items():
        (snapshot / tool.Names.STORAGE_RECORD_DIR / f'{guest}.{manifest["consistency"]}.manifest.json').write_text(
            json.dumps(manifest))
    (snapshot / tool.Names.STORAGE_RECORD).unlink()
    (world.vol1.path / tool.Names.STORAGE_RECORD).unlink()
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)

    earlier = json.loads(world.run('-output', 'json', 'storage', 'show', '-storage', 'ONTAP01', '-snapshot', name).out)
    original = world.run('storage', 'show', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert [(g['vmid'], g['type'], g['consistency']) for g in earlier['guests']] == [
        (100, 'qemu', 'running'), (101, 'qemu', 'shutdown')]
    assert original.code == 0, original.err
    assert 'guests       not recorded (a snapshot made by the original tool)' in original.out


def test_a_record_not_written_still_leaves_the_snapshot_and_fails_naming_it(world):
    world.a.fail('POST', r'files/pve-ontap-snapshot\.manifest', status=500, message='disk quota exceeded')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 1
    (name,) = snapshots(world)
    assert error_lines(result) == [(
        f'ERROR: storage ONTAP01: snapshot {name} was made, but no guest was recorded in '
        f'pve-ontap-snapshot.manifest.json on ONTAP01: ONTAP {world.a.host}: write pve-ontap-snapshot.manifest.json '
        'in volume proxmox_storage01: disk quota exceeded')]
    assert snapshot_record(world, name) is None


def test_a_record_whose_answer_was_lost_is_read_back(world):
    world.a.lose_answer('POST', r'files/pve-ontap-snapshot\.manifest')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    (name,) = snapshots(world)
    assert snapshot_record(world, name)['vm-101']['config'].startswith('memory: 1024\n')


def test_a_record_of_more_than_a_megabyte_is_written_and_read_a_megabyte_at_a_time(world):
    # PVE keeps a description of up to 8 KiB (qemu-server: description, maxLength 8192)
    for vmid in range(300, 440):
        world.pve.add_vm(vmid, f'vm{vmid}', status='stopped', config={
            'scsi0': f'ONTAP01:{vmid}/vm-{vmid}-disk-0.raw,size=1G', 'description': 'x' * 8000})
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (name,) = snapshots(world)
    world.a.requests.clear()

    result = world.run('-output', 'json', 'storage', 'show', '-storage', 'ONTAP01', '-snapshot', name)

    assert result.code == 0, result.err
    assert (world.vol1.path / tool.Names.STORAGE_RECORD).stat().st_size > 2**20
    assert len(json.loads(result.out)['guests']) == 142
    reads = [r for r in world.a.requests if r['query'].get('length')]
    assert [int(r['query']['byte_offset']) for r in reads] == [0, 2**20]


def test_a_dry_run_says_which_record_it_would_write_and_writes_none(world):
    before = world.state()

    result = world.run('-dry-run', 'storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert world.state() == before
    lines = [line.split(' (')[0] for line in result.out.splitlines()]
    assert lines[0] == 'would write pve-ontap-snapshot.manifest.json in volume proxmox_storage01'
    assert lines[1].startswith('would create snapshot proxmox_snapshot_')


def test_on_a_node_storage_create_reads_the_configs_from_pmxcfs_and_takes_six_requests(world, monkeypatch):
    add_container(world)
    monkeypatch.setattr(tool.Node, 'name', lambda: 'pve1')
    monkeypatch.setattr(tool.Node, 'CONFIGS_DIR', str(write_pmxcfs_configs(world.pve, world.dir)))
    world.pve.requests.clear()

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    (name,) = snapshots(world)
    record = snapshot_record(world, name)
    assert record['ct-200']['config_from'] == f'{world.dir}/nodes/pve2/lxc/200.conf'
    assert record['vm-101']['config'] == 'memory: 1024\nname: db\nscsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G\n'
    assert [path for _, path, _ in world.pve.requests] == [
        '/api2/json/access/ticket', '/api2/json/storage', '/api2/json/cluster/resources']
    assert [(r['method'], r['path'].rsplit('/', 1)[-1]) for r in world.a.requests] == [
        ('GET', 'volumes'), ('POST', 'pve-ontap-snapshot.manifest.json'), ('POST', 'snapshots')]


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
def test_recorded_guests_come_from_the_manifest_names_of_earlier_builds(names, expected):
    assert tool.Names.recorded_guests(names) == expected


@pytest.mark.parametrize('counts, expected', [
    ({}, '-'), ({'running': 1}, '1 running'),
    ({'running': 1, 'frozen': 3}, '3 frozen, 1 running'),
    ({'shutdown': 1, 'atomic': 1}, '1 atomic, 1 shutdown')])
def test_consistency_summary_counts_most_first_and_reads_back_from_the_comment(counts, expected):
    assert tool.Consistency.summary(counts) == expected
    comment = tool.Names.storage_snapshot_comment('ONTAP01', counts)
    assert comment == f'Snapshot of Proxmox storage ONTAP01; guests: {expected if counts else "none"}'
    assert tool.Names.guest_counts(comment) == counts


@pytest.mark.parametrize('comment', ['Snapshot of Proxmox storage ONTAP01', '', None, 'guests: 3 running'])
def test_a_comment_that_says_nothing_of_guests_counts_none(comment):
    assert tool.Names.guest_counts(comment) is None


def test_a_containers_raw_lxc_keys_go_last_as_pve_writes_them():
    config = {'hostname': 'ct', 'lxc': [['lxc.apparmor.profile', 'unconfined']], 'digest': 'x'}
    assert tool.Guest.config_text_of({'type': 'lxc'}, config) == 'hostname: ct\nlxc.apparmor.profile: unconfined\n'
