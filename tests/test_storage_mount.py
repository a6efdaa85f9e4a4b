"""storage mount and storage unmount: a FlexClone volume of a snapshot, added to PVE as the NFS
storage <id>-CLONE (or -name), on this node only; unmount takes away the storage and its FlexClone
again, also what one side left, and never a storage that is no such mount or that a guest uses."""

import pytest
import requests
from world import (
    MARCH_SNAPSHOT,
    OLD_SNAPSHOT,
    ONTAP_PASSWORD,
    error_lines,
    fails_cleanly,
    log_in_without_vm_audit,
)

import pve_ontap_snapshot as tool

# -- storage mount

def test_mount_adds_a_flexclone_as_nfs_storage_and_unmount_removes_both(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    disk = world.disk(world.vol1, 100, 'vm-100-disk-0.raw').read_bytes()

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert result.code == 0, result.err
    clone = world.a.volume('proxmox_storage01_clone')
    assert clone.is_flexclone and clone.parent_snapshot == OLD_SNAPSHOT and clone.junction == '/proxmox_storage01_clone'
    assert (clone.path / 'images/100/vm-100-disk-0.raw').read_bytes() == disk
    storage = world.pve.storage_config('ONTAP01-CLONE')
    assert storage['type'] == 'nfs' and storage['export'] == '/proxmox_storage01_clone'
    assert storage['server'] == '127.0.0.1' and storage['options'] == 'nconnect=16'
    assert storage['content'] == 'images'
    assert storage['path'] == '/mnt/pve/ONTAP01-CLONE'
    assert world.vol1.snapshots[OLD_SNAPSHOT].owners

    result = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE')

    assert result.code == 0, result.err
    assert 'ONTAP01-CLONE' not in world.pve.storages
    assert world.a.volume('proxmox_storage01_clone') is None
    assert OLD_SNAPSHOT in world.vol1.snapshots and not world.vol1.snapshots[OLD_SNAPSHOT].owners


def test_mount_failing_on_ontap_adds_no_pve_storage(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    world.a.fail_job('POST', r'^/api/storage/volumes$', code=524597, message='Failed to create clone.')

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert result.code == 1
    assert 'Failed to create clone' in result.err
    assert 'ONTAP01-CLONE' not in world.pve.storages


def test_mount_failing_on_pve_removes_the_flexclone_again(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    world.pve.fail('POST', '/storage', 500, 'create storage failed: mount error: mount.nfs: access denied',
                   times=1)

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert result.code == 1
    assert result.err.strip().splitlines()[-1].endswith('mount.nfs: access denied')
    assert world.a.volume('proxmox_storage01_clone') is None
    assert 'ONTAP01-CLONE' not in world.pve.storages
    assert not world.vol1.snapshots[OLD_SNAPSHOT].owners


def test_a_mount_of_an_unknown_snapshot_is_an_error(world):
    fails_cleanly(world, ('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT), 1,
                  f'volume proxmox_storage01 has no snapshot {OLD_SNAPSHOT}')


def test_mount_twice_is_refused_before_anything_changes(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    before = world.state()

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert result.code == 1
    assert result.err.strip() == (f'ERROR: Proxmox {world.pve_host}: storage ONTAP01-CLONE already exists, mounted '
                                  'earlier: unmount it (storage unmount -storage ONTAP01-CLONE), or choose another id '
                                  'with -name')
    assert world.state() == before


def test_several_snapshots_mounted_at_once_on_the_local_node_only(world):
    world.add_storage_snapshots()

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


@pytest.mark.parametrize('entry, storage, mounted', [
    ({'type': 'nfs', 'export': '/proxmox_storage01_clone'}, 'ONTAP01-CLONE', True),
    ({'type': 'nfs', 'export': '/proxmox_storage01_clone/'}, 'ONTAP01-CLONE', True),
    ({'type': 'nfs', 'export': '/proxmox_storage01_clone_ONTAP01_MARCH'}, 'ONTAP01-MARCH', True),
    ({'type': 'nfs', 'export': '/vol2_clone_ONTAP01_CLONE'}, 'ONTAP01-CLONE', True),
    ({'type': 'nfs', 'export': '/proxmox_storage01_clone'}, 'ONTAP01-MARCH', False),
    ({'type': 'nfs', 'export': '/proxmox_storage02'}, 'BACKUP', False),
    ({'type': 'nfs', 'export': '/_clone'}, 'X-CLONE', False),
    ({'type': 'lvmthin'}, 'local-lvm', False), ({'type': 'dir', 'path': '/x_clone'}, 'X-CLONE', False)])
def test_a_storage_made_by_mount_is_told_from_others(entry, storage, mounted):
    assert tool.StorageMount.made_by_mount(entry, storage) is mounted


def test_a_taken_storage_id_that_is_no_mount_is_not_to_be_unmounted(world):
    world.add_storage_snapshots()
    before = world.state()
    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-name', 'local-lvm')
    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: storage local-lvm already exists and is no '
                                    'mount (type lvmthin): choose another id with -name')]
    assert world.state() == before


def test_an_nfs_storage_that_is_no_mount_is_not_to_be_unmounted(world):
    world.add_storage_snapshots()
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
    world.add_storage_snapshots()
    world.write_config(ONTAP03=f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\n'
                               f'verify = {world.a.cafile}\n')
    world.a.requests.clear()
    before = world.state()

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-name', name)

    assert result.code == 2
    assert error_lines(result) == ['ERROR: ' + line.format(config=world.config)]
    assert world.state() == before and not world.a.requests


def test_mount_on_this_node_and_unmount_detaches_the_nfs_mount(world, on_pve1):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    assert world.pve.storage_config('ONTAP01-CLONE')['nodes'] == 'pve1'
    assert not world.pve_requests(path='*/cluster/status')

    result = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE')

    assert result.code == 0, result.err
    assert on_pve1() == ['umount -- /mnt/pve/ONTAP01-CLONE', 'umount -f -l -- /mnt/pve/ONTAP01-CLONE']
    assert world.a.volume('proxmox_storage01_clone') is None


# -- storage unmount

def test_unmount_disables_then_removes_then_deletes_the_clone(world):
    world.add_storage_snapshots()
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    world.pve.requests.clear()

    assert world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE').code == 0

    assert [(r.method, r.path.rsplit('/', 1)[1], r.params) for r in world.pve_changes()] == [
        ('PUT', 'ONTAP01-CLONE', {'disable': '1'}), ('DELETE', 'ONTAP01-CLONE', {})]


def test_dry_run_of_unmount(world):
    world.add_storage_snapshots()
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    before = world.state()
    result = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE', '-dry-run')
    assert result.code == 0, result.err
    assert 'would delete volume proxmox_storage01_clone' in result.out
    assert world.state() == before


def test_unmount_refuses_a_storage_of_the_config(world):
    before = world.state()

    result = world.run('storage', 'unmount', '-storage', 'ONTAP01')

    assert result.code == 1
    assert result.err.strip() == (f'ERROR: storage ONTAP01 has its own section in {world.config}, so it is no mount: '
                                  'refusing to remove it')
    assert world.state() == before and not world.a.requests


def test_unmount_refuses_a_flexclone_of_another_volume(world):
    world.a.add_snapshot('other_volume', 'snap')
    flexclone_by_hand(world, 'other_clone', 'snap', 'FOREIGN', parent='other_volume')
    before = world.state()

    result = world.run('storage', 'unmount', '-storage', 'FOREIGN')

    assert result.code == 1
    assert error_lines(result) == [('ERROR: storage FOREIGN is backed by volume other_clone, which is no FlexClone '
                                   f'of a storage in {world.config}: refusing to remove it')]
    assert world.state() == before


def mounted_then_unmount_refused(world, change, line):
    """Mount OLD_SNAPSHOT as ONTAP01-CLONE, change() the world, and see unmount refuse with `line`, changing nothing."""
    world.add_storage_snapshots()
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


def test_a_user_who_cannot_see_every_guest_is_refused_the_unmount(world):
    world.add_storage_snapshots()
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    world.pve.vm(100).status = 'stopped'
    log_in_without_vm_audit(world)
    before = world.state()

    result = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE')

    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: ops@pve lacks VM.Audit on /vms, so unmount '
                                    'cannot see every guest: grant it (README, Least privilege), or add -force')]
    assert world.state() == before


def test_a_leftover_flexclone_that_another_storage_mounts_is_kept(world):
    def readd_it_under_another_id():
        world.pve.storages['RECOVER'] = world.pve.storages.pop('ONTAP01-CLONE')
    mounted_then_unmount_refused(world, readd_it_under_another_id, (
        'ERROR: FlexClone proxmox_storage01_clone is mounted as PVE storage RECOVER: unmount RECOVER instead'))


# -- what one side left

def flexclone_by_hand(world, name, snapshot, storage, parent='proxmox_storage01'):
    """A FlexClone of a volume of cluster A (ONTAP01's) and a PVE storage on it, made without this
    tool (or by an older one)."""
    response = requests.post(f'{world.a.url}/api/storage/volumes', params={'return_timeout': 10},
                             auth=('admin', ONTAP_PASSWORD), verify=world.a.cafile, json={
            'name': name, 'svm': {'name': 'svm1'}, 'nas': {'path': f'/{name}'},
            'clone': {'is_flexclone': True, 'parent_volume': {'name': parent},
                      'parent_snapshot': {'name': snapshot}}})
    assert response.status_code == 201, response.text
    world.pve.storages[storage] = {'type': 'nfs', 'server': '127.0.0.1', 'export': f'/{name}', 'content': 'images',
                                   'path': f'/mnt/pve/{storage}', 'files': set(), 'volumes': {}}


def test_a_clone_of_one_storage_under_another_storages_clone_id_unmounts(world):
    world.add_storage_snapshots()
    flexclone_by_hand(world, 'proxmox_storage01_clone_ONTAP02_CLONE', OLD_SNAPSHOT, 'ONTAP02-CLONE')

    result = world.run('storage', 'unmount', '-storage', 'ONTAP02-CLONE')

    assert result.code == 0, result.err
    assert 'ONTAP02-CLONE' not in world.pve.storages
    assert world.a.volume('proxmox_storage01_clone_ONTAP02_CLONE') is None
    assert not world.vol1.snapshots[OLD_SNAPSHOT].owners and world.vol2.path.exists()


def test_the_flexclone_left_by_such_a_clone_storage_is_found_too(world):
    world.add_storage_snapshots()
    flexclone_by_hand(world, 'proxmox_storage01_clone_ONTAP02_CLONE', OLD_SNAPSHOT, 'ONTAP02-CLONE')
    del world.pve.storages['ONTAP02-CLONE']

    result = world.run('storage', 'unmount', '-storage', 'ONTAP02-CLONE')

    assert result.code == 0, result.err
    assert world.a.volume('proxmox_storage01_clone_ONTAP02_CLONE') is None


def delete_volume_behind_our_back(world, name):
    response = requests.delete(f'{world.a.url}/api/storage/volumes/{world.a.volume(name).uuid}',
                               params={'return_timeout': 10}, auth=('admin', ONTAP_PASSWORD), verify=world.a.cafile)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize('storage, clone, argv', [
    ('ONTAP01-CLONE', 'proxmox_storage01_clone', ()),
    ('ONTAP01-MARCH', 'proxmox_storage01_clone_ONTAP01_MARCH', ('-name', 'ONTAP01-MARCH'))])
def test_unmount_removes_the_storage_when_its_flexclone_is_gone_already(world, storage, clone, argv):
    world.add_storage_snapshots()
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
    world.add_storage_snapshots()
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
