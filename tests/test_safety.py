"""Safe under faults and in the wrong hands: guarded restore, busy snapshots, dry runs, mounts
that clean up, locks, faults on both sides, tokens and certificates, no leaked secrets."""

import os
import re
import types

import pytest
import requests
from fakepve import TaskError
from world import (
    FILE_CLONE,
    MARCH_SNAPSHOT,
    OLD_SNAPSHOT,
    ONTAP_B_PASSWORD,
    ONTAP_PASSWORD,
    PVE_PASSWORD,
    PVE_USER,
    add_storage_snapshots,
    cloning,
    error_lines,
    log_in_without_vm_audit,
)

import pve_ontap_snapshot as tool

# -- storage restore


# -- busy snapshots


# -- dry run

DRY_RUNS = [
    ('vm', 'create', '-vm', 100, '-suspend', '-keep', 1),
    ('vm', 'restore', '-vm', 101, '-snapshot', '2024-03-11_10:00:00+0000'),
    ('vm', 'delete', '-vm', 101, '-snapshot', '2024-03-11_10:00:00+0000'),
    ('storage', 'create', '-storage', 'ONTAP01', '-keep', 1),
    ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
]


@pytest.mark.parametrize('argv', DRY_RUNS, ids=lambda argv: ' '.join(map(str, argv[:2])))
def test_dry_run_prints_the_plan_and_changes_nothing(world, argv):
    add_storage_snapshots(world)
    old_set = world.disk(world.vol1, 101, 'vm-101-disk-0-snapshot-2024-03-11_10:00:00+0000.raw')
    old_set.write_bytes(b'an old VM snapshot')
    world.pve.vm(100).status = 'stopped' if argv[1] == 'restore' else 'running'
    before = world.state()

    result = world.run('-dry-run', *argv)

    assert result.code == 0, result.err
    assert 'INFO' not in result.err
    planned = [line for line in result.out.splitlines() if line.startswith('would ')]
    assert planned, result.out
    assert world.state() == before
    assert not world.ontap_changes()
    assert not world.pve_changes()


def test_dry_run_of_vm_create_names_each_step(world):
    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-dry-run')
    lines = [line for line in result.out.splitlines() if line.startswith('would ')]
    steps = [re.sub(r'snapshot-\S+$', 'snapshot-', ' '.join(line.split()[1:3]).split('pve_ontap_capture_')[0])
             for line in lines]
    assert steps == (['suspend VM', 'create snapshot', 'create snapshot', 'start VM'] + ['file-clone .snapshot/'] * 6
                     + ['delete snapshot', 'delete snapshot', 'write images/100/vm-100-snapshot-', 'register the'])
    assert lines[0] == f'would suspend VM 100 (Proxmox {world.pve_host})'
    capture = re.search(r'pve_ontap_capture_\S+_vm100', lines[1])[0]
    assert lines[4].startswith(f'would file-clone .snapshot/{capture}/images/100/')
    assert lines[-1].startswith('would register the snapshot as unused disks (VM 100)')


def test_dry_run_with_keep_shows_what_retention_would_delete(world):
    add_storage_snapshots(world)
    old_set = world.disk(world.vol1, 101, 'vm-101-disk-0-snapshot-2024-03-11_10:00:00+0000.raw')
    old_set.write_bytes(b'an old VM snapshot')
    before = world.state()

    vm = world.run('-dry-run', 'vm', 'create', '-vm', 101, '-keep', 1, '-no-register')
    storage = world.run('-dry-run', 'storage', 'create', '-storage', 'ONTAP01', '-keep', 2)

    assert vm.code == 0 and storage.code == 0, vm.err + storage.err
    assert f'would delete images/101/{old_set.name} in volume proxmox_storage01' in vm.out
    deleted = [line for line in storage.out.splitlines() if line.startswith('would delete snapshot')]
    assert deleted == [f'would delete snapshot {OLD_SNAPSHOT} of volume proxmox_storage01 (ONTAP {world.a.host})']
    assert world.state() == before


def test_dry_run_of_unmount(world):
    add_storage_snapshots(world)
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    before = world.state()
    result = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE', '-dry-run')
    assert result.code == 0, result.err
    assert 'would delete volume proxmox_storage01_clone' in result.out
    assert world.state() == before


# -- mounts

def test_several_snapshots_mounted_at_once_on_the_local_node_only(world):
    add_storage_snapshots(world)

    first = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)
    second = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', MARCH_SNAPSHOT, '-name', 'ONTAP01-MARCH')

    assert first.code == 0 and second.code == 0, second.err
    march = world.a.volume('proxmox_storage01_clone_ONTAP01_MARCH')
    assert march.parent_snapshot == MARCH_SNAPSHOT and march.junction == '/proxmox_storage01_clone_ONTAP01_MARCH'
    config = world.pve.storage_config('ONTAP01-MARCH')
    assert config['export'] == '/proxmox_storage01_clone_ONTAP01_MARCH'
    assert config['nodes'] == 'pve1' and world.pve.storage_config('ONTAP01-CLONE')['nodes'] == 'pve1'

    assert world.run('storage', 'unmount', '-storage', 'ONTAP01-MARCH').code == 0
    assert 'ONTAP01-MARCH' not in world.pve.storages and world.a.volume(march.name) is None
    assert world.a.volume('proxmox_storage01_clone') is not None


def test_a_taken_storage_id_that_is_no_mount_is_not_to_be_unmounted(world):
    add_storage_snapshots(world)
    before = world.state()
    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-name', 'local-lvm')
    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: storage local-lvm already exists and is no '
                                    'mount (type lvmthin): choose another id with -name')]
    assert world.state() == before


def test_an_nfs_storage_that_is_no_mount_is_not_to_be_unmounted(world):
    add_storage_snapshots(world)
    world.pve.storages['BACKUP'] = dict(world.pve.storages['ONTAP02'], path='/mnt/pve/BACKUP', files=set(),
                                        volumes={})
    before = world.state()
    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-name', 'BACKUP')
    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: storage BACKUP already exists and is no mount '
                                    '(type nfs, export /proxmox_storage02): choose another id with -name')]
    assert world.state() == before


@pytest.mark.parametrize('name, line', [
    ('ONTAP02', ('storage id ONTAP02: {config} has a section [ONTAP02], so a mount of that id would be taken for a '
                'storage of its own: choose another id with -name')),
    ('ONTAP03', ('storage id ONTAP03: {config} has a section [ONTAP03], so a mount of that id would be taken for a '
                'storage of its own: choose another id with -name')),
    ('ONTAP02-CLONE', ('storage id ONTAP02-CLONE: that is the mount id of storage ONTAP02 (section [ONTAP02] of '
                      '{config}), not of ONTAP01: choose another id with -name'))])
def test_a_mount_id_the_config_gives_another_meaning_is_refused_up_front(world, name, line):
    """ONTAP03 has a section but no PVE storage yet: a mount of that id would pass for it."""
    add_storage_snapshots(world)
    world.write_config(ONTAP03=f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\n'
                               f'verify = {world.a.cafile}\n')
    world.a.requests.clear()
    before = world.state()

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-name', name)

    assert result.code == 2
    assert error_lines(result) == ['ERROR: ' + line.format(config=world.config)]
    assert world.state() == before and not world.a.requests


def flexclone_by_hand(world, name, snapshot, storage):
    """A FlexClone of ONTAP01's volume and a PVE storage on it, made without this tool (or by an older one)."""
    response = requests.post(f'{world.a.url}/api/storage/volumes', params={'return_timeout': 10},
                             auth=('admin', ONTAP_PASSWORD), verify=world.a.cafile, json={
            'name': name, 'svm': {'name': 'svm1'}, 'nas': {'path': f'/{name}'},
            'clone': {'is_flexclone': True, 'parent_volume': {'name': 'proxmox_storage01'},
                      'parent_snapshot': {'name': snapshot}}})
    assert response.status_code == 201, response.text
    world.pve.storages[storage] = {'type': 'nfs', 'server': '127.0.0.1', 'export': f'/{name}', 'content': 'images',
                                   'path': f'/mnt/pve/{storage}', 'files': set(), 'volumes': {}}


def test_a_clone_of_one_storage_under_another_storages_clone_id_unmounts(world):
    add_storage_snapshots(world)
    flexclone_by_hand(world, 'proxmox_storage01_clone_ONTAP02_CLONE', OLD_SNAPSHOT, 'ONTAP02-CLONE')

    result = world.run('storage', 'unmount', '-storage', 'ONTAP02-CLONE')

    assert result.code == 0, result.err
    assert 'ONTAP02-CLONE' not in world.pve.storages
    assert world.a.volume('proxmox_storage01_clone_ONTAP02_CLONE') is None
    assert not world.vol1.snapshots[OLD_SNAPSHOT].owners and world.vol2.path.exists()


def test_the_flexclone_left_by_such_a_clone_storage_is_found_too(world):
    add_storage_snapshots(world)
    flexclone_by_hand(world, 'proxmox_storage01_clone_ONTAP02_CLONE', OLD_SNAPSHOT, 'ONTAP02-CLONE')
    del world.pve.storages['ONTAP02-CLONE']

    result = world.run('storage', 'unmount', '-storage', 'ONTAP02-CLONE')

    assert result.code == 0, result.err
    assert world.a.volume('proxmox_storage01_clone_ONTAP02_CLONE') is None


def test_unmount_disables_then_removes_then_deletes_the_clone(world):
    add_storage_snapshots(world)
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    world.pve.requests.clear()

    assert world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE').code == 0

    assert [(r.method, r.path.rsplit('/', 1)[1], r.params) for r in world.pve_changes()] == [
        ('PUT', 'ONTAP01-CLONE', {'disable': '1'}), ('DELETE', 'ONTAP01-CLONE', {})]


def delete_volume_behind_our_back(world, name):
    response = requests.delete(f'{world.a.url}/api/storage/volumes/{world.a.volume(name).uuid}',
                               params={'return_timeout': 10}, auth=('admin', ONTAP_PASSWORD), verify=world.a.cafile)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize('storage, clone, argv', [
    ('ONTAP01-CLONE', 'proxmox_storage01_clone', ()),
    ('ONTAP01-MARCH', 'proxmox_storage01_clone_ONTAP01_MARCH', ('-name', 'ONTAP01-MARCH'))])
def test_unmount_removes_the_storage_when_its_flexclone_is_gone_already(world, storage, clone, argv):
    add_storage_snapshots(world)
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, *argv).code == 0
    delete_volume_behind_our_back(world, clone)

    result = world.run('storage', 'unmount', '-storage', storage)

    assert result.code == 0, result.err
    assert f'no volume at /{clone} any more (its FlexClone is gone): removing storage {storage}' in result.err
    assert storage not in world.pve.storages


@pytest.mark.parametrize('storage, clone, argv', [
    ('ONTAP01-CLONE', 'proxmox_storage01_clone', ()),
    ('ONTAP01-MARCH', 'proxmox_storage01_clone_ONTAP01_MARCH', ('-name', 'ONTAP01-MARCH'))])
def test_unmount_deletes_the_flexclone_a_removed_storage_left(world, storage, clone, argv):
    add_storage_snapshots(world)
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, *argv).code == 0
    del world.pve.storages[storage]

    result = world.run('storage', 'unmount', '-storage', storage)

    assert result.code == 0, result.err
    assert f'storage {storage} is not in Proxmox any more: deleting the FlexClone {clone} it left' in result.err
    assert world.a.volume(clone) is None and world.a.volume('proxmox_storage01') is not None


def test_unmount_of_what_is_gone_on_both_sides_is_an_error(world):
    before = world.state()
    result = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE')
    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: no storage ONTAP01-CLONE, and no FlexClone '
                                   'left by a mount of that name')]
    assert world.state() == before


def test_a_user_who_cannot_see_every_guest_is_refused_the_unmount(world):
    add_storage_snapshots(world)
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    world.pve.vm(100).status = 'stopped'
    log_in_without_vm_audit(world)
    before = world.state()

    result = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE')

    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: ops@pve lacks VM.Audit on /vms, so unmount '
                                    'cannot see every guest: grant it (README, Least privilege), or add -force')]
    assert world.state() == before


def mounted_then_unmount_refused(world, change, line):
    """Mount OLD_SNAPSHOT as ONTAP01-CLONE, change the world, and see unmount refuse with `line`, changing nothing."""
    add_storage_snapshots(world)
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    change()
    before = world.state()

    result = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE')

    assert result.code == 1
    assert error_lines(result) == [line]
    assert world.state() == before


def test_unmount_refuses_a_clone_storage_a_guest_uses(world):
    def attach_a_disk_of_it():
        world.pve.vm(101).config['scsi1'] = 'ONTAP01-CLONE:100/vm-100-disk-0.raw,size=1G'
    mounted_then_unmount_refused(world, attach_a_disk_of_it, (
        'ERROR: storage ONTAP01-CLONE is in use by VM 101: remove their disks on it first (copy what you need off '
        'it), or add -force'))


def test_unmount_refuses_while_a_node_that_is_down_keeps_its_guests_from_being_checked(world):
    mounted_then_unmount_refused(world, lambda: world.pve.set_node_offline('pve2'), (
        'ERROR: storage ONTAP01-CLONE: cannot check whether it is used by VM 101 (node unreachable): add -force to '
        'remove it anyway'))
    assert world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE', '-force').code == 0
    assert world.a.volume('proxmox_storage01_clone') is None


def test_a_leftover_flexclone_that_another_storage_mounts_is_kept(world):
    def readd_it_under_another_id():
        world.pve.storages['RECOVER'] = world.pve.storages.pop('ONTAP01-CLONE')
    mounted_then_unmount_refused(world, readd_it_under_another_id, (
        'ERROR: FlexClone proxmox_storage01_clone is mounted as PVE storage RECOVER: unmount RECOVER instead'))


def test_an_ha_vm_whose_stop_outlasts_the_wait_is_asked_to_start_again(world):
    vm = world.pve.vm(100)
    vm.ha_state = 'started'
    world.pve.time_scale, world.pve.ha_delay = 0.01, 50     # HA acts 0.5 s after its request
    world.write_config(defaults='task_timeout = 0.1\n')

    result = world.run('vm', 'create', '-vm', 100, '-shutdown', '-no-register')

    assert result.code == 1
    assert 'the HA manager has not made it stopped after 0.1 s (task_timeout)' in result.err
    assert world.power_actions()[:2] == ['shutdown', 'start']
    assert not world.ontap_changes(on=world.a)


def test_unmount_refuses_a_flexclone_of_another_volume(world):
    world.a.add_snapshot('other_volume', 'snap')
    response = requests.post(f'{world.a.url}/api/storage/volumes', params={'return_timeout': 10},
                             auth=('admin', ONTAP_PASSWORD), verify=world.a.cafile, json={
            'name': 'other_clone', 'svm': {'name': 'svm1'}, 'nas': {'path': '/other_clone'},
            'clone': {'is_flexclone': True, 'parent_volume': {'name': 'other_volume'},
                      'parent_snapshot': {'name': 'snap'}}})
    assert response.status_code == 201, response.text
    world.pve.storages['FOREIGN'] = {'type': 'nfs', 'server': '127.0.0.1', 'export': '/other_clone',
                                     'content': 'images', 'path': '/mnt/pve/FOREIGN', 'files': set(), 'volumes': {}}
    before = world.state()

    result = world.run('storage', 'unmount', '-storage', 'FOREIGN')

    assert result.code == 1
    assert error_lines(result) == [('ERROR: storage FOREIGN is backed by volume other_clone, which is no FlexClone '
                                   f'of a storage in {world.config}: refusing to remove it')]
    assert world.state() == before


# -- faults

def test_reads_are_retried_after_503_and_a_reset_connection(world):
    world.a.fail('GET', r'^/api/storage/volumes$', status=503, code='7', message='busy', times=2)
    world.a.drop('GET', r'/snapshots$', times=1)
    add_storage_snapshots(world)

    result = world.run('storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert OLD_SNAPSHOT in result.out


@pytest.mark.parametrize('fault', ['drop', 'fail'])
def test_a_failed_clone_post_is_not_repeated_and_leaves_nothing(world, fault):
    match = cloning('images/100/vm-100-disk-2.qcow2')
    if fault == 'drop':
        world.a.drop('POST', '/api/storage/file/clone', match=match)
    else:
        world.a.fail('POST', '/api/storage/file/clone', status=500, code='1', message='internal error', match=match)
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'scsi0 (' in line and 'removed the 5 clone(s)' in line
    posts = [r for r in world.ontap_requests(path=FILE_CLONE) if match(r['body'])]
    assert len(posts) == 1
    assert world.state() == before


def test_a_job_slower_than_its_bound_fails_and_names_the_clone(world):
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', '/api/storage/file/clone', 3, match=cloning('images/100/vm-100-disk-0.raw'))

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'ide0 (' in line and 'still running after 1 s (job_timeout)' in line
    assert 'to images/100/vm-100-disk-0-snapshot-' in line
    assert world.pve.vm(100).status == 'running'


def failing_suspend(pve):
    async def _do_suspend(self, vm, user, params):
        async def body():
            raise TaskError('VM 100 qmp command savevm-start failed - timeout')
        return await self.task(vm.node, 'qmsuspend', vm.vmid, user, body, vm=vm)
    pve._do_suspend = types.MethodType(_do_suspend, pve)


def test_a_failed_suspend_task_leaves_the_vm_running_and_nothing_cloned(world):
    failing_suspend(world.pve)
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: suspend VM 100: task qmsuspend failed: VM 100 '
                                   'qmp command savevm-start failed - timeout')]
    assert world.state() == before
    assert not world.ontap_requests('POST')


def test_a_failed_start_task_says_the_vm_is_stopped(world):
    world.pve.vm(100).start_error = 'kvm: -drive file=/mnt/pve/ONTAP01/images/100/vm-100-disk-0.raw: Permission denied'

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert re.match(r'ERROR: VM 100: snapshot \S+ of 6 disk\(s\) was made, but VM 100 could not be started again '
                    'after', line)
    assert 'start it by hand' in line and 'Permission denied' in line
    # the snapshot itself is complete and kept
    assert len(world.clones(world.vol1, 100)) == 4


def test_a_failed_clone_and_a_failed_start_are_both_reported_and_the_clones_removed(world):
    world.a.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.',
                     match=cloning('images/100/vm-100-disk-0.raw'))
    world.pve.vm(100).start_error = 'kvm: Permission denied'

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'ide0 (' in line and 'removed the 5 clone(s) made before' in line
    assert 'and VM 100 could not be started again' in line and 'start it by hand' in line
    assert not [f for vol in (world.vol1, world.vol2) for f in world.clones(vol, 100)]


def test_a_restore_whose_start_fails_says_the_disks_are_restored_and_the_vm_stopped(world):
    stamp = '2024-03-12_10:00:00+0000'
    world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{stamp}.raw').write_bytes(b'then' * 2048)
    world.pve.vm(101).status = world.pve.vm(101).qmpstatus = 'running'
    world.pve.vm(101).start_error = 'kvm: Permission denied'

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-shutdown', '-yes')

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith(f'ERROR: VM 101: disks scsi0 restored from snapshot {stamp}, but VM 101 could not be '
                           'started again')
    assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == b'then' * 2048
    assert world.pve.vm(101).status == 'stopped'


def test_a_failed_restore_and_a_failed_start_are_both_reported_and_the_disks_put_back(world):
    stamp = '2024-03-12_10:00:00+0000'
    world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{stamp}.raw').write_bytes(b'then' * 2048)
    live = world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes()
    world.a.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.',
                     match={'destination_path': 'images/101/vm-101-disk-0.raw'})
    world.pve.vm(101).status = world.pve.vm(101).qmpstatus = 'running'
    world.pve.vm(101).start_error = 'kvm: Permission denied'

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-shutdown', '-yes')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'restore failed, every disk is as it was' in line and 'and VM 101 could not be started again' in line
    assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == live


def test_shutdown_of_an_ha_vm_waits_until_ha_has_stopped_it_and_started_it(world):
    vm = world.pve.vm(100)
    vm.ha_state = 'started'
    world.pve.time_scale, world.pve.ha_delay = 0.01, 10     # HA acts 0.1 s after its task ended
    status_at = []
    for emu in (world.a, world.b):
        emu.on_request = lambda r: r['method'] == 'POST' and status_at.append((r['path'].rsplit('/', 1)[1], vm.status))

    result = world.run('vm', 'create', '-vm', 100, '-shutdown', '-no-register')

    assert result.code == 0, result.err
    # the capture snapshots while HA has the VM stopped, the clones once HA runs it again
    assert sorted(status_at) == [('clone', 'running')] * 6 + [('snapshots', 'stopped')] * 2 + [
        (name, 'running') for name in sorted(world.records(world.vol1, 100))]
    assert vm.status == 'running'
    assert world.power_actions() == ['shutdown', 'start']


def test_suspend_of_an_ha_vm_is_refused_before_anything_changes(world):
    world.pve.vm(100).ha_state = 'started'
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    assert error_lines(result) == [('ERROR: VM 100 is managed by HA, and PVE does not suspend such a VM to disk: '
                                   'use -pause, -shutdown or -freeze')]
    assert world.state() == before and not world.ontap_changes(on=world.a)


def test_a_locked_vm_is_refused_before_anything_changes(world):
    world.pve.snapshot_lock(100, 'backup')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'suspend VM 100' in line and 'locked' in line
    assert world.state() == before


def test_an_expired_ticket_is_renewed_once(world):
    revoked = []

    def revoke(record):
        if record['path'] == '/api/storage/file/clone' and not revoked:
            revoked.append(True)
            world.pve.revoke_tickets()
    world.a.on_request = revoke

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 0, result.err
    assert world.pve.vm(100).status == 'running'
    assert world.logins() == 2


# -- credentials

def test_pve_api_token_instead_of_a_password(world):
    world.pve.apitokens[f'{PVE_USER}!backup'] = 'token-Secr3t-value'
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = {PVE_USER}\n'
                               'proxmox_token_name = backup\nproxmox_token_value = token-Secr3t-value\n'
                               f'proxmox_verify = {world.pve_cafile}\n')

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 0, result.err
    assert world.logins() == 0
    assert world.pve.vm(100).status == 'running'


def test_ontap_client_certificate_instead_of_a_password(world):
    certfile, keyfile = world.a.cert_user('admin')
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\ncert = {certfile}\nkey = {keyfile}\n'
                               f'verify = {world.a.cafile}\n')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert len(world.vol1.snapshots) == 1


OLD_SET = '2024-03-11_10:00:00+0000'
EVERY_COMMAND = [
    ('vm', 'create', '-vm', 100, '-suspend', '-keep', 2), ('vm', 'list', '-vm', 100),
    ('vm', 'create', '-vm', 101), ('vm', 'delete', '-vm', 100, '-snapshot', '2024-03-11_10:00:00+0000'),
    ('storage', 'create', '-storage', 'ONTAP01'), ('storage', 'list', '-storage', 'ONTAP01'),
    ('storage', 'show', '-storage', 'ONTAP02'), ('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'unmount', '-storage', 'ONTAP01-CLONE'),
    ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', MARCH_SNAPSHOT, '-force', '-yes'),
    ('vm', 'create', '-vm', 999), ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'nope'),
    ('vm', 'create', '-all', '-freeze', '-keep', 3), ('vm', 'restore', '-vm', 101, '-snapshot', OLD_SET, '-yes'),
    ('vm', 'restore', '-vm', 101, '-storage-snapshot', MARCH_SNAPSHOT, '-yes'),
]


def test_no_secret_in_any_output_even_at_debug(world):
    world.pve.apitokens[f'{PVE_USER}!backup'] = 'token-Secr3t-value'
    world.with_agent(100)
    for vmid in (100, 101):
        world.disk(world.vol1, vmid, f'vm-{vmid}-disk-0-snapshot-{OLD_SET}.raw').write_bytes(b'then')
    add_storage_snapshots(world)
    secrets = [ONTAP_PASSWORD, ONTAP_B_PASSWORD, PVE_PASSWORD, 'token-Secr3t-value', 'PVEAuthCookie',
               'CSRFPreventionToken', 'Authorization', 'Basic ']
    outputs = []
    for argv in EVERY_COMMAND:
        result = world.run('-loglevel', 'debug', *argv)
        outputs.append(result.out + result.err)
        assert result.code == (1 if 999 in argv or 'nope' in argv else 0), result.err
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = {PVE_USER}\n'
                               'proxmox_token_name = backup\nproxmox_token_value = token-Secr3t-value\n'
                               f'proxmox_verify = {world.pve_cafile}\n')
    result = world.run('-loglevel', 'debug', 'vm', 'list', '-vm', 100)
    outputs.append(result.out + result.err)
    text = '\n'.join(outputs)
    assert 'ONTAP GET' in text and 'PVE GET' in text
    for secret in secrets:
        assert secret not in text


def test_warns_when_config_is_readable_by_others(world):
    os.chmod(world.config, 0o644)
    result = world.run('storage', 'list', '-storage', 'ONTAP01')
    assert result.code == 0
    assert f'WARNING: {world.config} is readable by group or others (mode 644) and holds passwords: chmod 600' \
        in result.err


@pytest.mark.parametrize('host, local', [('localhost', True), ('127.0.0.1:8006', True), ('[::1]:8006', True),
                                         ('pve1', True), ('pve1.example.org:8006', True), ('pve2', False),
                                         ('192.0.2.10', False)])
def test_is_local_host(host, local):
    assert tool.ConfigFile.is_local_host(host, 'pve1.example.org') is local


def test_verify_defaults_to_the_cluster_ca_on_the_node(tmp_path, monkeypatch):
    ca = tmp_path / 'pve-root-ca.pem'
    monkeypatch.setattr(tool.ConfigFile, 'PVE_ROOT_CA', str(ca))
    assert tool.ConfigFile.default_pve_verify('localhost:8006') is True
    ca.write_text('x')
    assert tool.ConfigFile.default_pve_verify('localhost:8006') == str(ca)
    assert tool.ConfigFile.default_pve_verify('192.0.2.10') is True
