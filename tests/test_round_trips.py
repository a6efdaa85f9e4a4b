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
    assert not world.ontap_requests(path='*/jobs*')
    # login, VM lookup, config, storage.cfg, and registering the clones (one PUT, guarded by the config's digest)
    assert pve == 5


def test_vm_create_of_a_running_vm_adds_only_its_two_captures_and_their_deletes(world):
    """A running VM's disks are cloned from one capture snapshot per volume: a create and a
    delete on each of the two volumes, four requests more than a stopped VM's twelve."""
    add_vm_of_four_disks_on_two_clusters(world, 'running')

    ontap, pve = world.requests_of('vm', 'create', '-vm', 103)

    assert (ontap, pve) == (2 + 2 + 4 + 2 + 1, 5)
    changes = [(r['method'], r['path'].split('/')[-2 if r['method'] == 'DELETE' else -1])
               for r in world.ontap_changes()]
    assert sorted(changes) == [('DELETE', 'snapshots')] * 2 + [('POST', 'clone')] * 4 + [('POST', 'snapshots')] * 2 + [
        ('POST', name) for name in sorted(world.records(world.vol1, 103))]
    assert not world.ontap_requests(path='*/jobs*')
    assert not world.vol1.snapshots and not world.vol2.snapshots
