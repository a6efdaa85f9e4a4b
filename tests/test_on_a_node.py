"""Running on a PVE node as root: `qm disk rescan` registers clones and `umount` cleans up
a removed clone storage. Fake `qm` and `umount` executables, where PROGRAMS names them, record
their calls; the one probe of the machine (root, qm, /etc/pve) answers "node pve1"."""




OLD = 'proxmox_snapshot_2024-03-13_14:42:47+0000'


def test_clones_of_a_vm_on_this_node_are_registered_by_qm_disk_rescan(world, on_pve1):
    before = dict(world.pve.vm(100).pending)

    assert world.run('vm', 'create', '-vm', 100).code == 0

    assert on_pve1() == ['qm disk rescan --vmid 100']
    assert world.pve.vm(100).pending == before
    assert not world.pve_requests('PUT')


def test_a_vm_on_another_node_is_registered_through_the_api(world, on_pve1):
    assert world.run('vm', 'create', '-vm', 101).code == 0
    assert on_pve1() == []
    assert [k for k in world.pve.vm(101).config if k.startswith('unused')] == ['unused0']
