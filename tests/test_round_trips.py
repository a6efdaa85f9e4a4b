"""Fewest round trips: request counts of the commands (counts, never times)."""

import pytest
from ontap_emulator import NEWEST_RELEASE
from world import write_disk


@pytest.fixture
def ontap_release():
    """The counts of a current release: an older one costs a request more per field it lacks."""
    return NEWEST_RELEASE


def add_vm_of_four_disks_on_two_clusters(world, status):
    config = {}
    for n, (sid, vol) in enumerate((('ONTAP01', world.vol1), ('ONTAP01', world.vol1),
                                    ('ONTAP02', world.vol2), ('ONTAP02', world.vol2))):
        write_disk(vol, 103, f'vm-103-disk-{n}.raw')
        config[f'scsi{n}'] = f'{sid}:103/vm-103-disk-{n}.raw'
    world.pve.add_vm(103, 'four', node='pve2', status=status, config=config)


def test_vm_create_of_a_stopped_vm_of_four_disks_on_two_clusters_takes_twelve_requests(world):
    add_vm_of_four_disks_on_two_clusters(world, 'stopped')

    ontap, pve = world.requests_of('vm', 'create', '-vm', 103)

    # one volume lookup per cluster, one clone per disk, and the VM's manifest (its config in it)
    # written, answered without a job poll
    assert ontap == 2 + 4 + 1
    assert [r['path'] for r in world.a.requests + world.b.requests if 'jobs' in r['path']] == []
    # login, VM lookup, config, storage.cfg, and registering the clones (one PUT, guarded by the config's digest)
    assert pve == 5


def test_vm_create_of_a_running_vm_adds_only_its_two_captures_and_their_deletes(world):
    """A running VM's disks are cloned from one capture snapshot per volume: a create and a
    delete on each of the two volumes, four requests more than a stopped VM's twelve."""
    add_vm_of_four_disks_on_two_clusters(world, 'running')

    ontap, pve = world.requests_of('vm', 'create', '-vm', 103)

    assert (ontap, pve) == (2 + 2 + 4 + 2 + 1, 5)
    changes = [(r['method'], r['path'].split('/')[-2 if r['method'] == 'DELETE' else -1])
               for r in world.a.requests + world.b.requests if r['method'] != 'GET']
    assert sorted(changes) == [('DELETE', 'snapshots')] * 2 + [('POST', 'clone')] * 4 + [('POST', 'snapshots')] * 2 + [
        ('POST', name) for name in sorted(world.records(world.vol1, 103))]
    assert [r['path'] for r in world.a.requests + world.b.requests if 'jobs' in r['path']] == []
    assert not world.vol1.snapshots and not world.vol2.snapshots


def test_storage_create_writes_one_record_whatever_the_guests_and_storage_list_reads_none(world):
    """storage create: the volume, one record of every guest (written over the last), the snapshot;
    and of PVE the guest list and, off a node, each guest's config (3; on a node pmxcfs has them:
    test_storage_records.py). storage list: the volume and its snapshots, what each holds in its comment."""
    assert world.requests_of('storage', 'create', '-storage', 'ONTAP01') == (1 + 1 + 1, 2 + 1 + 3)
    assert world.requests_of('storage', 'create', '-storage', 'ONTAP01') == (1 + 1 + 1, 2 + 1 + 3)
    assert world.requests_of('storage', 'list', '-storage', 'ONTAP01') == (2, 2)


def test_storage_delete_takes_five_requests_four_with_force_and_three_with_a_token(world):
    """The snapshot is read for its hold (in its comment) and deleted by its UUID, answered without
    a job poll. -force deletes it unread, by a query-based DELETE filtered by its name. An API
    token saves the PVE login."""
    for name in ('proxmox_snapshot_a', 'proxmox_snapshot_b', 'proxmox_snapshot_c'):
        world.a.add_snapshot('proxmox_storage01', name)
    assert world.requests_of('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_a') == (3, 2)
    assert world.requests_of('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_b',
                             '-force') == (2, 2)
    world.pve.apitokens['root@pam!backup'] = 'token-value'
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = root@pam\n'
                               'proxmox_token_name = backup\nproxmox_token_value = token-value\n'
                               f'proxmox_verify = {world.pve_cafile}\n')
    assert world.requests_of('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_c',
                             '-force') == (2, 1)
    assert not [name for name in world.vol1.snapshots if name.startswith('proxmox_snapshot_')]


def test_listing_a_thousand_snapshots_is_one_request(world):
    for n in range(1000):
        world.b.add_snapshot('proxmox_storage02', f'proxmox_snapshot_2024-01-01_00:{n // 60:02d}:{n % 60:02d}+0000')
    world.b.requests.clear()

    result = world.run('-output', 'json', 'storage', 'list', '-storage', 'ONTAP02')

    assert result.code == 0 and result.out.count('"name"') == 1000
    assert len([r for r in world.b.requests if r['path'].endswith('/snapshots')]) == 1

