"""storage create|list|show|delete|restore|mount|unmount against both clusters and fakepve."""

import json

from world import DST_A, DST_B, snapshots_across_a_dst_change

STAMP = r'\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\+0000'
OLD = 'proxmox_snapshot_2024-03-13_14:42:47+0000'


def test_list_shows_only_the_tools_snapshots_oldest_first(world):
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_2024-03-14_10:00:00+0000', comment='newer',
                         create_time='2024-03-14T10:00:00+00:00')
    world.a.add_snapshot('proxmox_storage01', OLD, comment='made by the original',
                         create_time='2024-03-13T14:42:47+00:00')
    world.a.add_snapshot('proxmox_storage01', 'hourly.2024-03-14_0905', create_time='2024-03-14T09:05:00+00:00')

    result = world.run('-loglevel', 'warn', 'storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 0 and result.err == ''
    lines = result.out.splitlines()
    assert lines[0].split() == ['NAME', 'CREATED', 'SIZE', 'LABEL', 'GUESTS', 'CONSISTENCY', 'COMMENT']
    assert [line.split()[0] for line in lines[1:]] == [OLD, 'proxmox_snapshot_2024-03-14_10:00:00+0000']
    assert 'made by the original' in lines[1]


def test_list_as_json(world):
    world.a.add_snapshot('proxmox_storage01', OLD, comment='c', create_time='2024-03-13T14:42:47+00:00')
    result = world.run('storage', 'list', '-storage', 'ONTAP01', '-output', 'json')
    data = json.loads(result.out)
    assert [s['name'] for s in data] == [OLD]
    assert set(data[0]) == {'name', 'create_time', 'size', 'label', 'comment', 'guests'}


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
    assert world.storage_snapshots() == ['proxmox_snapshot_2024-03-14_10:00:00+0000']


def test_delete_of_an_unknown_snapshot_is_an_error(world):
    world.a.add_snapshot('proxmox_storage01', OLD)
    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_nope')

    assert result.code == 1
    assert result.err.strip() == (f'ERROR: ONTAP {world.a.host}: volume proxmox_storage01 has no snapshot '
                                  'proxmox_snapshot_nope')
    assert world.storage_snapshots() == [OLD]


def test_delete_waits_for_a_job_that_outlasts_return_timeout(world):
    world.write_config(defaults='read_timeout = 6\n')   # return_timeout = 1 s
    world.a.add_snapshot('proxmox_storage01', OLD)
    world.a.slow_job('DELETE', r'/snapshots$', 1.2)

    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD)

    assert result.code == 0, result.err
    assert world.storage_snapshots() == []
    assert world.ontap_requests(path='/api/cluster/jobs/*', on=world.a)


def test_delete_of_a_wildcard_name_deletes_nothing(world):
    """A name with a query operator must not reach ONTAP as a filter of a query-based DELETE."""
    world.a.add_snapshot('proxmox_storage01', OLD)
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_2024-03-14_10:00:00+0000')

    for name in ('proxmox_snapshot_*', '!nothing', f'{OLD}|proxmox_snapshot_2024-03-14_10:00:00+0000'):
        result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name)
        assert result.code == 1 and result.err.strip().endswith(f'has no snapshot {name}')

    assert world.storage_snapshots() == [OLD, 'proxmox_snapshot_2024-03-14_10:00:00+0000']


def test_restore_brings_back_the_bytes(world):
    disk = world.disk(world.vol1, 100, 'vm-100-disk-0.raw')
    original = disk.read_bytes()
    world.a.add_snapshot('proxmox_storage01', OLD)
    disk.write_bytes(b'changed after the snapshot')

    world.pve.vm(100).status = 'stopped'

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD, '-yes')

    assert result.code == 0, result.err
    assert disk.read_bytes() == original
    (patch,) = world.ontap_requests('PATCH')
    assert patch['path'] == f'/api/storage/volumes/{world.vol1.uuid}'
    assert patch['query']['restore_to.snapshot.name'] == OLD
    assert not world.ontap_requests(path='*/private/cli*')


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


def test_list_orders_snapshots_by_time_across_a_dst_change(world):
    snapshots_across_a_dst_change(world)

    result = world.run('storage', 'list', '-storage', 'ONTAP01', '-output', 'json')

    assert result.code == 0, result.err
    listed = json.loads(result.out)
    assert [s['name'] for s in listed] == [DST_A, DST_B]
    assert [s['create_time'] for s in listed] == ['2024-10-27T02:30:00+02:00', '2024-10-27T02:15:00+01:00']


def test_restore_across_a_dst_change_names_the_later_snapshot_as_newer(world):
    snapshots_across_a_dst_change(world)
    world.pve.vm(100).status = 'stopped'

    result = world.run('-output', 'json', 'storage', 'restore', '-storage', 'ONTAP01', '-snapshot', DST_A, '-yes')

    assert result.code == 0, result.err
    assert json.loads(result.out)['newer'] == [DST_B]
    assert world.storage_snapshots() == [DST_A]     # ONTAP deleted the newer one, as the plan said


# -- snapmirror labels and -min-age
