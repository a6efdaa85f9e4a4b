"""vm create on many VMs: requests, and what -keep deletes."""

import re

from world import add_vm_on_both_clusters

OLDER = ('2024-01-01_00:00:00+0000', '2024-01-02_00:00:00+0000', '2024-01-03_00:00:00+0000')


def requests_of(world, *argv):
    """(ONTAP requests, PVE requests) of one successful command."""
    before = len(world.a.requests) + len(world.b.requests), len(world.pve.requests)
    result = world.run(*argv)
    assert result.code == 0, result.err
    return len(world.a.requests) + len(world.b.requests) - before[0], len(world.pve.requests) - before[1]


def sets_of(world, vmid):
    """The stamps of the VM's snapshot sets, from the files on both volumes."""
    names = world.files(world.vol1, vmid) + world.files(world.vol2, vmid)
    return sorted({m.group(1) for name in names if (m := re.search(r'-snapshot-(\S+)\.raw$', name))})


def test_keep_deletes_every_old_set_of_a_vm_without_reading_its_config_again(world):
    for vmid in (103, 104, 105, 106):
        add_vm_on_both_clusters(world, vmid, older=OLDER)

    ontap, pve = requests_of(world, 'vm', 'create', '-vm', 103, 104, 105, 106, '-keep', 2)

    # per VM: 2 clones, 2 directory listings, 2 old sets of 2 files deleted
    assert ontap == 2 + 4 * (2 + 2 + 4)
    # per VM: its config, and registering the clones (pending config, PUT): that pending config serves
    # to delete both old sets as well
    assert pve == 3 + 4 * 3
    for vmid in (103, 104, 105, 106):
        assert sets_of(world, vmid)[0] == OLDER[2] and len(sets_of(world, vmid)) == 2


def test_keep_takes_the_unused_disks_of_a_registered_old_set_with_it(world):
    for vmid in (103, 104):
        add_vm_on_both_clusters(world, vmid, status='stopped')     # its config changes at once
    assert world.run('vm', 'create', '-vm', 103, 104, '-keep', 1).code == 0
    first = {vmid: sets_of(world, vmid) for vmid in (103, 104)}

    ontap, pve = requests_of(world, 'vm', 'create', '-vm', 103, 104, '-keep', 1)

    # per VM: 2 clones, 2 listings, the old set's 2 files; its config, the pending config and one PUT to
    # register, one PUT to unregister the old set
    assert (ontap, pve) == (2 + 2 * 6, 3 + 2 * 4)
    for vmid in (103, 104):
        (stamp,) = sets_of(world, vmid)
        assert [stamp] != first[vmid]
        unused = sorted(v for k, v in world.pve.vm(vmid).config.items() if k.startswith('unused'))
        assert unused == [f'ONTAP01:{vmid}/vm-{vmid}-disk-0-snapshot-{stamp}.raw',
                          f'ONTAP02:{vmid}/vm-{vmid}-disk-1-snapshot-{stamp}.raw']
