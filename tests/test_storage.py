"""storage create|list|show|delete|restore|mount|unmount against both clusters and fakepve."""



STAMP = r'\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\+0000'
OLD = 'proxmox_snapshot_2024-03-13_14:42:47+0000'


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


# -- snapmirror labels and -min-age
