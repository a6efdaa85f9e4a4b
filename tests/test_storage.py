"""storage create|list|show|delete|restore|mount|unmount against both clusters and fakepve."""

import datetime
import json
import re
import time

import pytest
from world import ONTAP_PASSWORD

STAMP = r'\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\+0000'
OLD = 'proxmox_snapshot_2024-03-13_14:42:47+0000'


def tool_snapshots(vol):
    return sorted(name for name in vol.snapshots if name.startswith('proxmox_snapshot_'))


def test_create_takes_a_snapshot_with_the_originals_name_and_comment_and_its_guests(world):
    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    (name,) = tool_snapshots(world.vol1)
    assert re.fullmatch('proxmox_snapshot_' + STAMP, name)
    assert world.vol1.snapshots[name].comment == 'Snapshot of Proxmox storage ONTAP01; guests: 1 running, 1 shutdown'
    assert (world.vol1.snapshot_path(name) / 'images/100/vm-100-disk-0.raw').read_bytes() == \
        world.disk(world.vol1, 100, 'vm-100-disk-0.raw').read_bytes()
    assert not world.vol2.snapshots


def test_an_export_with_a_trailing_slash_finds_its_volume(world):
    world.pve.storages['ONTAP01']['export'] = '/proxmox_storage01/'
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    assert len(tool_snapshots(world.vol1)) == 1


def test_create_on_the_second_cluster_with_svm(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP02').code == 0
    assert len(tool_snapshots(world.vol2)) == 1
    lookups = [r for r in world.b.requests if r['path'] == '/api/storage/volumes']
    assert all(r['query'].get('svm.name') == 'svm2' for r in lookups)
    assert all(r['query'].get('name') or r['query'].get('nas.path') for r in lookups)


def test_list_shows_only_the_tools_snapshots_oldest_first(world):
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_2024-03-14_10:00:00+0000', comment='newer',
                         create_time='2024-03-14T10:00:00+00:00')
    world.a.add_snapshot('proxmox_storage01', OLD, comment='made by the original',
                         create_time='2024-03-13T14:42:47+00:00')
    world.a.add_snapshot('proxmox_storage01', 'hourly.2024-03-14_0905', create_time='2024-03-14T09:05:00+00:00')

    result = world.run('-loglevel', 'warn', 'storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 0 and result.err == ''
    lines = result.out.splitlines()
    assert lines[0].split() == ['NAME', 'CREATED', 'SIZE', 'LABEL', 'GUESTS', 'CONSISTENCY', 'COMMENT', 'HELD']
    assert [line.split()[0] for line in lines[1:]] == [OLD, 'proxmox_snapshot_2024-03-14_10:00:00+0000']
    assert 'made by the original' in lines[1]


def test_list_as_json(world):
    world.a.add_snapshot('proxmox_storage01', OLD, comment='c', create_time='2024-03-13T14:42:47+00:00')
    result = world.run('storage', 'list', '-storage', 'ONTAP01', '-output', 'json')
    data = json.loads(result.out)
    assert [s['name'] for s in data] == [OLD]
    assert set(data[0]) == {'name', 'create_time', 'size', 'label', 'comment', 'guests', 'consistency', 'held'}


def test_show_prints_the_volume(world):
    result = world.run('storage', 'show', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    fields = dict(line.split(None, 1) for line in result.out.splitlines())
    assert fields['name'] == 'proxmox_storage01'
    assert fields['nas.path'] == '/proxmox_storage01'
    assert fields['svm.name'] == 'svm1'
    assert fields['uuid'] == world.vol1.uuid


def test_delete_removes_the_snapshot(world):
    world.a.add_snapshot('proxmox_storage01', OLD)
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_2024-03-14_10:00:00+0000')

    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD)

    assert result.code == 0, result.err
    assert tool_snapshots(world.vol1) == ['proxmox_snapshot_2024-03-14_10:00:00+0000']


def test_delete_of_an_unknown_snapshot_is_an_error(world):
    world.a.add_snapshot('proxmox_storage01', OLD)
    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_nope')

    assert result.code == 1
    assert result.err.strip() == (f'ERROR: ONTAP {world.a.host}: volume proxmox_storage01 has no snapshot '
                                  'proxmox_snapshot_nope')
    assert tool_snapshots(world.vol1) == [OLD]


@pytest.mark.parametrize('force', [(), ('-force',)], ids=['by uuid', 'by name, -force'])
def test_delete_waits_for_a_job_that_outlasts_return_timeout(world, force):
    world.write_config(defaults='read_timeout = 6\n')   # return_timeout = 1 s
    world.a.add_snapshot('proxmox_storage01', OLD)
    world.a.slow_job('DELETE', r'/snapshots(/|$)', 1.2)

    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD, *force)

    assert result.code == 0, result.err
    assert tool_snapshots(world.vol1) == []
    assert [r for r in world.a.requests if r['path'].startswith('/api/cluster/jobs/')]


def test_delete_of_a_wildcard_name_deletes_nothing(world):
    """A name with a query operator must not reach ONTAP as a filter of a query-based DELETE."""
    world.a.add_snapshot('proxmox_storage01', OLD)
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_2024-03-14_10:00:00+0000')

    for name in ('proxmox_snapshot_*', '!nothing', f'{OLD}|proxmox_snapshot_2024-03-14_10:00:00+0000'):
        for force in ((), ('-force',)):
            result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name, *force)
            assert result.code == 1 and result.err.strip().endswith(f'has no snapshot {name}')

    assert tool_snapshots(world.vol1) == [OLD, 'proxmox_snapshot_2024-03-14_10:00:00+0000']


def test_restore_brings_back_the_bytes(world):
    disk = world.disk(world.vol1, 100, 'vm-100-disk-0.raw')
    original = disk.read_bytes()
    world.a.add_snapshot('proxmox_storage01', OLD)
    disk.write_bytes(b'changed after the snapshot')

    world.pve.vm(100).status = 'stopped'

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD, '-yes')

    assert result.code == 0, result.err
    assert disk.read_bytes() == original
    (patch,) = [r for r in world.a.requests if r['method'] == 'PATCH']
    assert patch['path'] == f'/api/storage/volumes/{world.vol1.uuid}'
    assert patch['query']['restore_to.snapshot.name'] == OLD
    assert not [r for r in world.a.requests if '/private/cli' in r['path']]


def test_mount_adds_a_flexclone_as_nfs_storage_and_unmount_removes_both(world):
    world.a.add_snapshot('proxmox_storage01', OLD)
    disk = world.disk(world.vol1, 100, 'vm-100-disk-0.raw').read_bytes()

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD)

    assert result.code == 0, result.err
    clone = world.a.volume('proxmox_storage01_clone')
    assert clone.is_flexclone and clone.parent_snapshot == OLD and clone.junction == '/proxmox_storage01_clone'
    assert (clone.path / 'images/100/vm-100-disk-0.raw').read_bytes() == disk
    storage = world.pve.storage_config('ONTAP01-CLONE')
    assert storage['type'] == 'nfs' and storage['export'] == '/proxmox_storage01_clone'
    assert storage['server'] == '127.0.0.1' and storage['options'] == 'nconnect=16'
    assert storage['content'] == 'images'
    assert storage['path'] == '/mnt/pve/ONTAP01-CLONE'
    assert world.vol1.snapshots[OLD].owners

    result = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE')

    assert result.code == 0, result.err
    assert 'ONTAP01-CLONE' not in world.pve.storages
    assert world.a.volume('proxmox_storage01_clone') is None
    assert OLD in world.vol1.snapshots and not world.vol1.snapshots[OLD].owners


def test_mount_failing_on_ontap_adds_no_pve_storage(world):
    world.a.add_snapshot('proxmox_storage01', OLD)
    world.a.fail_job('POST', r'^/api/storage/volumes$', code=524597, message='Failed to create clone.')

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD)

    assert result.code == 1
    assert 'Failed to create clone' in result.err
    assert 'ONTAP01-CLONE' not in world.pve.storages


def test_mount_failing_on_pve_removes_the_flexclone_again(world):
    world.a.add_snapshot('proxmox_storage01', OLD)
    world.pve.fail('POST', '/storage', 500, 'create storage failed: mount error: mount.nfs: access denied',
                   times=1)

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD)

    assert result.code == 1
    assert result.err.strip().splitlines()[-1].endswith('mount.nfs: access denied')
    assert world.a.volume('proxmox_storage01_clone') is None
    assert 'ONTAP01-CLONE' not in world.pve.storages
    assert not world.vol1.snapshots[OLD].owners


def test_mount_twice_is_refused_before_anything_changes(world):
    world.a.add_snapshot('proxmox_storage01', OLD)
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD).code == 0
    before = world.state()

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD)

    assert result.code == 1
    assert result.err.strip() == (f'ERROR: Proxmox {world.pve_host}: storage ONTAP01-CLONE already exists, mounted '
                                  'earlier: unmount it (storage unmount -storage ONTAP01-CLONE), or choose another id '
                                  'with -name')
    assert world.state() == before


def test_unmount_refuses_a_storage_of_the_config(world):
    before = world.state()

    result = world.run('storage', 'unmount', '-storage', 'ONTAP01')

    assert result.code == 1
    assert result.err.strip() == (f'ERROR: storage ONTAP01 has its own section in {world.config}, so it is no mount: '
                                  'refusing to remove it')
    assert world.state() == before and not world.a.requests


def test_two_creates_in_a_row_make_two_snapshots(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    assert len(tool_snapshots(world.vol1)) == 2


# Two snapshots across the end of summer time in a cluster at UTC+2/+1: A is older, but its
# create_time text sorts after B's.
DST_A, DST_B = 'proxmox_snapshot_2024-10-27_00:30:00+0000', 'proxmox_snapshot_2024-10-27_01:15:00+0000'


def snapshots_across_a_dst_change(world):
    utc = datetime.UTC
    world.a.utc_offset = datetime.timedelta(hours=2)
    world.a.add_snapshot('proxmox_storage01', DST_A, create_time=datetime.datetime(2024, 10, 27, 0, 30, tzinfo=utc))
    world.a.utc_offset = datetime.timedelta(hours=1)
    world.a.add_snapshot('proxmox_storage01', DST_B, create_time=datetime.datetime(2024, 10, 27, 1, 15, tzinfo=utc))
    assert world.vol1.snapshots[DST_A].create_time == '2024-10-27T02:30:00+02:00'
    assert world.vol1.snapshots[DST_B].create_time == '2024-10-27T02:15:00+01:00'


def test_list_orders_snapshots_by_time_across_a_dst_change(world):
    snapshots_across_a_dst_change(world)

    result = world.run('storage', 'list', '-storage', 'ONTAP01', '-output', 'json')

    assert result.code == 0, result.err
    listed = json.loads(result.out)
    assert [s['name'] for s in listed] == [DST_A, DST_B]
    assert [s['create_time'] for s in listed] == ['2024-10-27T02:30:00+02:00', '2024-10-27T02:15:00+01:00']


def test_keep_deletes_the_older_snapshot_across_a_dst_change(world):
    snapshots_across_a_dst_change(world)

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-keep', 2)

    assert result.code == 0, result.err
    (made,) = set(tool_snapshots(world.vol1)) - {DST_A, DST_B}
    assert tool_snapshots(world.vol1) == sorted([DST_B, made])


def test_restore_across_a_dst_change_names_the_later_snapshot_as_newer(world):
    snapshots_across_a_dst_change(world)
    world.pve.vm(100).status = 'stopped'

    result = world.run('-output', 'json', 'storage', 'restore', '-storage', 'ONTAP01', '-snapshot', DST_A, '-yes')

    assert result.code == 0, result.err
    assert json.loads(result.out)['newer'] == [DST_B]
    assert tool_snapshots(world.vol1) == [DST_A]     # ONTAP deleted the newer one, as the plan said


# -- snapmirror labels and -min-age

def labelled(world, name, label, created):
    world.a.add_snapshot('proxmox_storage01', name, create_time=created).snapmirror_label = label


def test_labels_live_side_by_side_under_keep(world):
    for day in ('10', '11', '12'):
        labelled(world, f'proxmox_snapshot_2024-03-{day}_10:00:00+0000', 'daily', f'2024-03-{day}T10:00:00+00:00')
    labelled(world, 'proxmox_snapshot_2024-03-03_10:00:00+0000', 'weekly', '2024-03-03T10:00:00+00:00')
    world.a.add_snapshot('proxmox_storage01', OLD, create_time='2024-03-13T14:42:47+00:00')   # the original's

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-label', 'daily', '-keep', 2)

    assert result.code == 0, result.err
    daily = sorted(name for name, snap in world.vol1.snapshots.items() if snap.snapmirror_label == 'daily')
    assert daily[0] == 'proxmox_snapshot_2024-03-12_10:00:00+0000' and len(daily) == 2
    assert {'proxmox_snapshot_2024-03-03_10:00:00+0000', OLD} <= set(world.vol1.snapshots)
    listed = {s['name']: s['label'] for s in json.loads(world.run('-output', 'json', 'storage', 'list', '-storage',
                                                                     'ONTAP01').out)}
    assert listed[OLD] is None and listed['proxmox_snapshot_2024-03-03_10:00:00+0000'] == 'weekly'


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
    with pytest.raises(SystemExit) as exited:
        world.run('storage', 'create', '-storage', 'ONTAP01', *argv)

    assert exited.value.code == 2 and not world.vol1.snapshots


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
    assert min(tool_snapshots(world.vol1)) == busy.name and len(tool_snapshots(world.vol1)) == 2
    busy.busy_until = 0
    later = world.run('-wait', 5, 'storage', 'create', '-storage', 'ONTAP01', '-keep', 1)
    assert later.code == 0, later.err
    assert busy.name not in world.vol1.snapshots and len(tool_snapshots(world.vol1)) == 1
