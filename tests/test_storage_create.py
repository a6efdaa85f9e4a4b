"""storage create: an ONTAP snapshot of the volume behind a storage, named and commented as the
original named it and its comment saying how many guests it holds and how consistent, with one
record (every guest's manifest, its config in it) of the guests on the storage written over the one
at the volume's root just before it; -keep, -label and -min-age; and
-freeze and -pause: every running VM with a disk on the storage is frozen through its guest agent
(or, with -pause, paused in memory when it cannot be), the volume snapshot is taken, and every
guest runs again — also when the snapshot fails or outlasts freeze_timeout (a stop signal:
test_signals.py)."""

import datetime
import re
import time

import pytest
from world import (
    DST_A,
    DST_B,
    OLD_SNAPSHOT,
    ONTAP_PASSWORD,
    CtNode,
    add_container,
    agent_commands,
    error_lines,
    is_capture,
    record_of,
    snapshots_across_a_dst_change,
    with_running_guests,
    write_pmxcfs_configs,
)

import pve_ontap_snapshot as tool

# -- the snapshot

def test_create_takes_a_snapshot_with_the_originals_name_and_comment_and_its_guests(world):
    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    assert re.fullmatch('proxmox_snapshot_' + tool.Names.STAMP_PATTERN, name)
    assert world.vol1.snapshots[name].comment == 'Snapshot of Proxmox storage ONTAP01; guests: 1 running, 1 shutdown'
    assert (world.vol1.snapshot_path(name) / 'images/100/vm-100-disk-0.raw').read_bytes() == \
        world.disk(world.vol1, 100, 'vm-100-disk-0.raw').read_bytes()
    assert not world.vol2.snapshots


def test_an_export_with_a_trailing_slash_finds_its_volume(world):
    world.pve.storages['ONTAP01']['export'] = '/proxmox_storage01/'
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    assert len(world.storage_snapshots()) == 1


def test_create_on_the_second_cluster_with_svm(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP02').code == 0
    assert len(world.storage_snapshots(world.vol2)) == 1
    lookups = world.ontap_requests(path='/api/storage/volumes', on=world.b)
    assert all(r['query'].get('svm.name') == 'svm2' for r in lookups)
    assert all(r['query'].get('name') or r['query'].get('nas.path') for r in lookups)


def test_two_creates_in_a_row_make_two_snapshots(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    assert len(world.storage_snapshots()) == 2


@pytest.mark.newest_release
def test_storage_create_writes_one_record_whatever_the_guests_and_storage_list_reads_none(world):
    """storage create: the volume, one record of every guest (written over the last), the snapshot;
    and of PVE the guest list and, off a node, each guest's config (3; on a node pmxcfs has them:
    test_on_a_node_storage_create_reads_the_configs_from_pmxcfs_and_takes_six_requests). storage list: the volume and its snapshots, what each holds in its comment."""
    assert world.requests_of('storage', 'create', '-storage', 'ONTAP01') == (1 + 1 + 1, 2 + 1 + 3)
    assert world.requests_of('storage', 'create', '-storage', 'ONTAP01') == (1 + 1 + 1, 2 + 1 + 3)
    assert world.requests_of('storage', 'list', '-storage', 'ONTAP01') == (2, 2)


# -- what it records of the guests

def consistencies(record):
    return {guest: manifest['consistency'] for guest, manifest in record.items()}


def test_each_storage_snapshot_holds_one_record_with_the_manifest_of_every_guest_on_it(world):
    add_container(world)

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    record = world.storage_record(name)
    # VM 100 and 101 and CT 200 have disks on ONTAP01; VM 102 only on local-lvm
    assert sorted(record) == ['ct-200', 'vm-100', 'vm-101']
    assert record == record_of(world.vol1.path / tool.Names.STORAGE_RECORD)
    assert world.vol1.snapshots[name].comment == 'Snapshot of Proxmox storage ONTAP01; guests: 1 running, 1 atomic, 1 shutdown'
    assert record['vm-101']['config'] == 'memory: 1024\nname: db\nscsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G\n'
    container = dict(record['ct-200'])
    assert 'rootfs: ONTAP01:200/vm-200-disk-0.raw,size=8G\n' in container.pop('config')
    assert container.pop('signature').startswith('hmac-sha256:')
    assert container == {
        'tool': 'pve-ontap-snapshot', 'version': tool.tool_version(), 'vmid': 200, 'type': 'lxc', 'name': 'files',
        'node': 'pve2', 'stamp': name, 'consistency': 'atomic', 'config_from': 'api',
        'identity': {'ctime': None, 'smbios_uuid': None, 'hwaddr': []},
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
    (name,) = world.storage_snapshots()
    assert consistencies(world.storage_record(name)) == expected
    counts = tool.Names.guest_counts(world.vol1.snapshots[name].comment)
    assert counts == {word: list(expected.values()).count(word) for word in expected.values()}


def test_a_guest_moved_away_is_no_longer_in_the_next_snapshot(world):
    world.pve.vm(101).config['description'] = 'a long description ' * 20
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    world.pve.vm(101).config['scsi0'] = 'local-lvm:vm-101-disk-0,size=1G'
    world.pve.vm(100).status = 'stopped'

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    first, second = world.storage_snapshots()
    assert consistencies(world.storage_record(first)) == {'vm-100': 'running', 'vm-101': 'shutdown'}
    # written over the longer record before it: the first JSON value is the whole record
    assert consistencies(world.storage_record(second)) == {'vm-100': 'shutdown'}
    assert world.storage_record(second)['vm-100']['stamp'] == second
    assert world.vol1.snapshots[second].comment.endswith('; guests: 1 shutdown')


def test_a_record_not_written_still_leaves_the_snapshot_and_fails_naming_it(world):
    world.a.fail('POST', r'files/pve-ontap-snapshot\.manifest', status=500, message='disk quota exceeded')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 1
    (name,) = world.storage_snapshots()
    assert error_lines(result) == [(
        f'ERROR: storage ONTAP01: snapshot {name} was made, but no guest was recorded in '
        f'pve-ontap-snapshot.manifest.json on ONTAP01: ONTAP {world.a.host}: write pve-ontap-snapshot.manifest.json '
        'in volume proxmox_storage01: disk quota exceeded')]
    assert world.storage_record(name) is None


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
    (name,) = world.storage_snapshots()
    record = world.storage_record(name)
    assert record['ct-200']['config_from'] == f'{world.dir}/nodes/pve2/lxc/200.conf'
    assert record['vm-101']['config'] == 'memory: 1024\nname: db\nscsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G\n'
    assert [r.path for r in world.pve_requests()] == [
        '/api2/json/access/ticket', '/api2/json/storage', '/api2/json/cluster/resources']
    assert [(r['method'], r['path'].rsplit('/', 1)[-1]) for r in world.ontap_requests(on=world.a)] == [
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


def test_a_containers_raw_lxc_keys_go_last_as_pve_writes_them():
    config = {'hostname': 'ct', 'lxc': [['lxc.apparmor.profile', 'unconfined']], 'digest': 'x'}
    assert tool.Guest.config_text_of({'type': 'lxc'}, config) == 'hostname: ct\nlxc.apparmor.profile: unconfined\n'


# -- -keep, -label and -min-age

def test_keep_deletes_the_older_snapshot_across_a_dst_change(world):
    snapshots_across_a_dst_change(world)

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-keep', 2)

    assert result.code == 0, result.err
    (made,) = set(world.storage_snapshots()) - {DST_A, DST_B}
    assert world.storage_snapshots() == sorted([DST_B, made])


def test_keep_skips_a_snapshot_ontap_keeps_busy_for_any_reason_and_a_later_run_deletes_it(world):
    for day in ('10', '11'):
        world.a.add_snapshot('proxmox_storage01', f'proxmox_snapshot_2024-03-{day}_10:00:00+0000',
                             create_time=f'2024-03-{day}T10:00:00+00:00')
    busy = world.vol1.snapshots['proxmox_snapshot_2024-03-10_10:00:00+0000']
    busy.busy_until = time.monotonic() + 60     # a file clone from it still runs: no owner says so

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-keep', 1)

    assert result.code == 0, result.err
    assert ('WARNING: storage ONTAP01: keeping snapshot proxmox_snapshot_2024-03-10_10:00:00+0000 beyond -keep 1: '
            'ONTAP keeps it busy (no owner named: a file clone from it may run); a later run deletes it') in result.err
    assert min(world.storage_snapshots()) == busy.name and len(world.storage_snapshots()) == 2
    busy.busy_until = 0
    later = world.run('-wait', 5, 'storage', 'create', '-storage', 'ONTAP01', '-keep', 1)
    assert later.code == 0, later.err
    assert busy.name not in world.vol1.snapshots and len(world.storage_snapshots()) == 1


def test_storage_keep_never_deletes_a_busy_snapshot(world):
    names = [f'proxmox_snapshot_2024-03-1{day}_10:00:00+0000' for day in (1, 2, 3)]
    for day, name in zip((1, 2, 3), names):
        world.a.add_snapshot('proxmox_storage01', name, create_time=f'2024-03-1{day}T10:00:00+00:00')
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', names[0]).code == 0

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-keep', 1)

    assert result.code == 0, result.err
    remaining = sorted(n for n in world.vol1.snapshots if n.startswith('proxmox_snapshot_'))
    assert remaining[0] == names[0] and len(remaining) == 2 and remaining[1] not in names
    assert f'keeping snapshot {names[0]} beyond -keep 1: FlexClone proxmox_storage01_clone uses it' in result.err


def labelled(world, name, label, created):
    world.a.add_snapshot('proxmox_storage01', name, create_time=created).snapmirror_label = label


def test_labels_live_side_by_side_under_keep(world):
    for day in ('10', '11', '12'):
        labelled(world, f'proxmox_snapshot_2024-03-{day}_10:00:00+0000', 'daily', f'2024-03-{day}T10:00:00+00:00')
    labelled(world, 'proxmox_snapshot_2024-03-03_10:00:00+0000', 'weekly', '2024-03-03T10:00:00+00:00')
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, create_time='2024-03-13T14:42:47+00:00')   # the original's

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-label', 'daily', '-keep', 2)

    assert result.code == 0, result.err
    daily = sorted(name for name, snap in world.vol1.snapshots.items() if snap.snapmirror_label == 'daily')
    assert daily[0] == 'proxmox_snapshot_2024-03-12_10:00:00+0000' and len(daily) == 2
    assert {'proxmox_snapshot_2024-03-03_10:00:00+0000', OLD_SNAPSHOT} <= set(world.vol1.snapshots)
    listed = {s['name']: s['label'] for s in world.json('storage', 'list', '-storage', 'ONTAP01')}
    assert listed[OLD_SNAPSHOT] is None and listed['proxmox_snapshot_2024-03-03_10:00:00+0000'] == 'weekly'


def test_a_sections_snapmirror_label_is_the_default(world):
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\n'
                               f'verify = {world.a.cafile}\nsnapmirror_label = hourly\n')

    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0

    (snap,) = world.vol1.snapshots.values()
    assert snap.snapmirror_label == 'hourly'


def test_min_age_takes_no_snapshot_while_one_of_its_label_is_young(world):
    now = datetime.datetime.now(datetime.UTC)
    labelled(world, 'proxmox_snapshot_recent', 'daily', (now - datetime.timedelta(minutes=20)).isoformat())
    labelled(world, 'proxmox_snapshot_weekly', 'weekly', (now - datetime.timedelta(minutes=5)).isoformat())

    skipped = world.run('storage', 'create', '-storage', 'ONTAP01', '-label', 'daily', '-min-age', '1h')
    taken = world.run('storage', 'create', '-storage', 'ONTAP01', '-label', 'daily', '-min-age', '15m')

    assert skipped.code == 0 and 'snapshot proxmox_snapshot_recent (label daily) is younger than -min-age 1h' \
        in skipped.err
    assert taken.code == 0, taken.err
    assert len([s for s in world.vol1.snapshots.values() if s.snapmirror_label == 'daily']) == 2


@pytest.mark.parametrize('argv', [('-label', 'a b'), ('-label', 'x' * 32), ('-min-age', 'soon'),
                                  ('-min-age', '1y')])
def test_bad_labels_and_durations_are_usage_errors(world, argv):
    world.usage_error('storage', 'create', '-storage', 'ONTAP01', *argv)

    assert not world.vol1.snapshots


@pytest.mark.parametrize('names, keep, gone', [
    (['a', 'b', 'c', 'd'], 2, ['a', 'b']), (['a', 'b'], 2, []), (['a'], 5, []), ([], 1, []),
    (['a', 'b', 'c'], 1, ['a', 'b'])])
def test_retention_removes_all_but_the_newest(names, keep, gone):
    assert tool.VmSnapshots.expired(names, keep) == gone


# -- -freeze and -pause

THAW_TOO_LATE = ("VM {vmid} qmp command 'guest-fsfreeze-thaw' failed - couldn't hold writes: fsfreeze is limited "
                 'up to 10 seconds')


def note_guests_at_the_snapshot(world, vms):
    """[{vmid: (frozen, qmpstatus)}] at each snapshot POST on cluster A."""
    seen = []
    world.a.on_request = lambda r: r['method'] == 'POST' and r['path'].endswith('/snapshots') and seen.append(
        {vmid: (vm.agent_frozen, vm.qmpstatus) for vmid, vm in vms.items()})
    return seen


@pytest.mark.parametrize('agent, pause, held', [
    ('1', False, ('freeze', None)), ('1', True, ('freeze', None)),
    (None, False, (None, 'no guest agent')), (None, True, ('pause', 'no guest agent')),
    ('1,freeze-fs=0', False, (None, 'its agent setting turns freezing off')),
    ('enabled=1,freeze-fs-on-backup=0', True, ('pause', 'its agent setting turns freezing off'))])
def test_how_storage_create_holds_a_running_vm(agent, pause, held):
    assert tool.GuestsWindow.hold_for({'agent': agent} if agent else {}, pause) == held


def test_a_frozen_storage_snapshot_thaws_every_guest(world):
    vms = with_running_guests(world)
    seen = note_guests_at_the_snapshot(world, vms)

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    # at the snapshot, the guests with an agent were frozen; the others ran on
    assert seen == [{100: (True, 'running'), 101: (True, 'running'), 103: (False, 'running'),
                     104: (False, 'running')}]
    assert agent_commands(vms[100]) == agent_commands(vms[101]) == ['fsfreeze-freeze', 'fsfreeze-thaw']
    assert not any(vm.agent_frozen for vm in vms.values())
    assert agent_commands(vms[104]) == [] and not world.power_requests(103)
    assert re.search(rf'storage ONTAP01: snapshot {re.escape(name)} taken with VM 100 frozen for \S+ s, VM 101 frozen '
                     r'for \S+ s', result.err)
    assert (f'INFO: storage ONTAP01: snapshot {name} is crash-consistent for VM 103: no guest agent'
            in result.err.splitlines())
    assert (f'snapshot {name} is crash-consistent for CT 200: a container: storage create -pause freezes it, on its '
            'own node') in result.err
    assert 'WARNING' not in result.err


def test_pause_freezes_a_container_on_this_node_for_the_snapshot_and_thaws_it(world, monkeypatch, tmp_path):
    node = CtNode(monkeypatch, tmp_path / 'pve2', 'pve2')      # this run on pve2, where CT 200 runs
    with_running_guests(world)
    seen = []
    world.a.on_request = lambda r: seen.append(node.state(200)) if is_capture(r) else None

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-pause')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    assert seen == ['FROZEN'] and node.state(200) == 'RUNNING'
    assert [call.split()[0] for call in node.calls() if call.startswith(('lxc-freeze', 'lxc-unfreeze'))] == [
        'lxc-freeze', 'lxc-unfreeze']
    assert re.search(rf'storage ONTAP01: snapshot {re.escape(name)} taken with .*CT 200 paused for \S+ s', result.err)
    assert world.storage_record(name)['ct-200']['consistency'] == 'paused'


def test_pause_leaves_a_container_on_another_node_crash_consistent_and_says_so(world):
    with_running_guests(world)

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-pause')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    assert (f'WARNING: storage ONTAP01: snapshot {name} is crash-consistent for CT 200: a container on node pve2: its '
            'freezer is reachable only there, as root') in result.err.splitlines()


def test_pause_pauses_in_memory_what_cannot_be_frozen_and_never_hibernates(world):
    vms = with_running_guests(world)
    vms[101].config['agent'] = 'enabled=1,freeze-fs-on-backup=0'     # its admin turned freezing off
    seen = note_guests_at_the_snapshot(world, vms)

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-pause')

    assert result.code == 0, result.err
    assert seen == [{100: (True, 'running'), 101: (False, 'paused'), 103: (False, 'paused'), 104: (False, 'running')}]
    for vmid in (101, 103):
        assert world.power_requests(vmid) == [('suspend', {}), ('resume', {})]
        assert (vms[vmid].status, vms[vmid].qmpstatus, vms[vmid].lock) == ('running', 'running', None)
    assert 'VM 101 paused for' in result.err and '(its agent setting turns freezing off)' in result.err
    assert 'VM 103 paused for' in result.err and '(no guest agent)' in result.err
    assert not world.power_requests(100) and not world.power_requests(104)


def test_every_guest_is_thawed_also_when_the_snapshot_fails(world):
    vms = with_running_guests(world)
    world.a.fail('POST', r'/snapshots$', status=400, code='525062', message='too many snapshots')

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-pause')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'too many snapshots' in line
    assert not world.storage_snapshots()
    assert not any(vm.agent_frozen for vm in vms.values())
    assert agent_commands(vms[100])[-1] == 'fsfreeze-thaw'
    assert world.power_requests(103) == [('suspend', {}), ('resume', {})] and vms[103].qmpstatus == 'running'


def test_guests_are_let_go_when_the_snapshot_outlasts_freeze_timeout(world):
    vms = with_running_guests(world)
    world.write_config(defaults='freeze_timeout = 0.2\n')
    world.a.slow_job('POST', r'/snapshots$', 1.0)

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    assert (f'WARNING: storage ONTAP01: snapshot {name}: the snapshot outlasted the bound of 0.2 s (freeze_timeout), '
            'so it is crash-consistent for VM 100, VM 101 (the manifests say frozen)') in result.err.splitlines()
    assert not any(vm.agent_frozen for vm in vms.values())


def test_a_guest_that_gave_up_its_freeze_is_named(world):
    vms = with_running_guests(world)
    world.pve.fail('POST', '/nodes/pve2/qemu/101/agent/fsfreeze-thaw', 500, THAW_TOO_LATE.format(vmid=101))

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    (line,) = [line for line in result.err.splitlines() if line.startswith('WARNING')]
    assert line.startswith(f'WARNING: storage ONTAP01: snapshot {name} is crash-consistent for VM 101: the guest of '
                           'VM 101 gave up its freeze before the thaw, as Windows VSS does after about 10 s')
    assert re.search(r'taken with VM 100 frozen for \S+ s$', result.err, re.MULTILINE)
    assert not vms[100].agent_frozen


def test_a_guest_that_cannot_be_thawed_fails_the_run_and_the_snapshot_stays(world):
    with_running_guests(world)
    world.pve.fail('POST', '/nodes/pve1/qemu/100/agent/fsfreeze-thaw', 500, 'VM 100 qmp command failed - timeout')
    for day in (11, 12):
        world.a.add_snapshot('proxmox_storage01', f'proxmox_snapshot_2024-03-{day}_10:00:00+0000',
                             create_time=f'2024-03-{day}T10:00:00+00:00')

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze', '-keep', 1)

    assert result.code == 1
    (line,) = error_lines(result)
    (name,) = world.storage_snapshots()      # made, and -keep still ran
    assert line == (f'ERROR: storage ONTAP01: snapshot {name} was made, but the guest of VM 100 could not be thawed '
                    'and may still be frozen: run "qm guest cmd 100 fsfreeze-thaw" (Proxmox '
                    f'{world.pve_host}: guest agent fsfreeze-thaw in VM 100: VM 100 qmp command failed - timeout)')


def test_an_agent_that_does_not_answer_leaves_its_vm_crash_consistent_or_paused(world):
    vms = with_running_guests(world)
    vms[101].agent = None       # configured, but no agent runs in the guest

    frozen = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze')
    paused = world.run('storage', 'create', '-storage', 'ONTAP01', '-pause')

    assert frozen.code == paused.code == 0, frozen.err + paused.err
    first = world.storage_snapshots()[0]
    assert [line for line in frozen.err.splitlines() if line.startswith('WARNING')] == [
        (f'WARNING: storage ONTAP01: snapshot {first} is crash-consistent for VM 101: its guest agent does not answer '
         f'(Proxmox {world.pve_host}: guest agent ping in VM 101: QEMU guest agent is not running)')]
    assert 'VM 101: its guest agent does not answer' in paused.err and 'so it was paused in memory instead' in paused.err
    assert world.power_requests(101) == [('suspend', {}), ('resume', {})]


def test_a_dry_run_freezes_nothing(world):
    vms = with_running_guests(world)
    before = world.state()

    result = world.run('-dry-run', 'storage', 'create', '-storage', 'ONTAP01', '-pause')

    assert result.code == 0, result.err
    # the records of the guests come first (a dry run of them above)
    steps = [line.split(' (')[0] for line in result.out.splitlines() if 'pve-ontap-snapshot' not in line]
    assert steps[:3] == ['would guest agent fsfreeze-freeze in VM 100', 'would guest agent fsfreeze-freeze in VM 101',
                         'would suspend VM 103']
    assert steps[3].startswith('would create snapshot proxmox_snapshot_')
    assert steps[4:] == ['would guest agent fsfreeze-thaw in VM 100', 'would guest agent fsfreeze-thaw in VM 101',
                         'would resume VM 103']
    assert world.state() == before and not any(vm.agent_frozen for vm in vms.values())
