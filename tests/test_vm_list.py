"""vm list: a VM's snapshots and pre-restore undo points across both clusters, oldest first, each
with its size, disks, whether it is complete, how consistent, and whether it is of this VM or of
another that had its id before (as a table, or as JSON)."""


import pytest
from world import (
    NEW_UUID,
    OLD_UUID,
    OLDER_STAMP,
    ORIGINAL_STAMP,
    VM101_DISK,
    destroy_vm,
    error_lines,
    make_set,
    pve_reads_nfs_directories,
    table,
    vm100_sources,
    vm101_made,
    write_disk,
)

import pve_ontap_snapshot as tool

OLD, OLDER = ORIGINAL_STAMP, OLDER_STAMP


# -- the snapshots of a VM

def test_list_shows_every_set_across_both_clusters_with_pre_restore_marked(world):
    sources = vm100_sources(world)
    make_set(world, 100, OLDER, sources)
    make_set(world, 100, OLD, sources[:2], kind='prerestore')

    result = world.run('vm', 'list', '-vm', 100)

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ['SNAPSHOT', 'KIND', 'SIZE', 'DISKS', 'STATE', 'CONSISTENCY', 'OF', 'HELD']
    assert table(result.out)[1:] == [
        [OLDER, 'snapshot', '48.0 KiB', 'ide0,scsi0,efidisk0,tpmstate0,sata0,virtio0', 'complete', 'unknown',
         'unknown', 'no'],
        [OLD, 'pre-restore', '16.0 KiB', 'ide0,sata0', 'incomplete (lacks efidisk0,scsi0,tpmstate0,virtio0)',
         'unknown', 'unknown', 'no']]
    data = world.vm_snapshots(100)
    assert [(s['stamp'], s['kind'], len(s['files'])) for s in data] == [(OLDER, 'snapshot', 6),
                                                                       (OLD, 'pre-restore', 2)]
    assert data[0]['size'] == 6 * 8192
    assert {f['storage'] for f in data[0]['files']} == {'ONTAP01', 'ONTAP02'}


def test_list_marks_a_set_that_lacks_disks_as_incomplete_but_not_one_with_files_of_a_removed_disk(world):
    sources = vm100_sources(world)
    make_set(world, 100, OLDER, sources + [(world.vol1, 'vm-100-disk-9.raw')])   # disk-9 was deleted since
    make_set(world, 100, OLD, [(vol, name) for vol, name in sources if vol is world.vol1])   # a partial run

    result = world.run('vm', 'list', '-vm', 100)

    assert result.code == 0, result.err
    older, old = table(result.out)[1:]
    assert older == [OLDER, 'snapshot', '56.0 KiB',
                     f'ide0,scsi0,efidisk0,tpmstate0,vm-100-disk-9-snapshot-{OLDER}.raw,sata0,virtio0', 'complete',
                     'unknown', 'unknown', 'no']
    assert old == [OLD, 'snapshot', '32.0 KiB', 'ide0,scsi0,efidisk0,tpmstate0', 'incomplete (lacks sata0,virtio0)',
                   'unknown', 'unknown', 'no']
    data = world.vm_snapshots(100)
    assert [(s['stamp'], s['complete'], s['missing']) for s in data] == [(OLDER, True, []),
                                                                       (OLD, False, ['sata0', 'virtio0'])]
    assert [f['disk'] for f in data[0]['files'] if 'disk-9' in f['path']] == [None]


def test_list_marks_a_set_made_before_a_disk_was_added_as_incomplete(world):
    make_set(world, 101, OLD, [(world.vol1, VM101_DISK)])
    write_disk(world.vol1, 101, 'vm-101-disk-1.raw')
    world.pve.vm(101).config['scsi1'] = 'ONTAP01:101/vm-101-disk-1.raw,size=1G'

    result = world.run('vm', 'list', '-vm', 101)

    assert result.code == 0, result.err
    assert table(result.out)[1:] == [[OLD, 'snapshot', '8.0 KiB', 'scsi0', 'incomplete (lacks scsi1)', 'unknown',
                                       'unknown', 'no']]
    assert [(s['complete'], s['missing']) for s in world.vm_snapshots(101)] == [(False, ['scsi1'])]


def test_list_of_a_vm_without_snapshots_is_empty(world):
    assert world.vm_snapshots(101) == []


def test_vm_list_shows_the_consistency_of_new_snapshots_and_unknown_for_old_ones(world):
    data = world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes()
    world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{OLD}.raw').write_bytes(data)
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    world.a.requests.clear()

    result = world.run('vm', 'list', '-vm', 101)

    assert result.code == 0, result.err
    rows = table(result.out)
    assert rows[0][-3:] == ['CONSISTENCY', 'OF', 'HELD']
    assert [(row[0] == OLD, row[3], row[-3]) for row in rows[1:]] == [(True, 'scsi0', 'unknown'),
                                                                      (False, 'scsi0', 'shutdown')]
    # the consistency from the directory listing; the one manifest read, to check it
    assert [r['method'] for r in world.ontap_requests(path='*/files*', on=world.a)] == ['GET', 'GET']
    data = world.vm_snapshots(101)
    assert [(s['consistency'], len(s['files'])) for s in data] == [('unknown', 1), ('shutdown', 1)]


# -- a VM id used again

def vm101_again(world):
    """VM 101 destroyed, its snapshots left, and a new, unrelated VM 101 made with the same disk name."""
    destroy_vm(world, 101, 'pve2')
    write_disk(world.vol1, 101, VM101_DISK)
    world.pve.add_vm(101, 'new', node='pve1', status='stopped', config={
        'scsi0': f'ONTAP01:101/{VM101_DISK},size=1G', 'memory': 2048,
        'meta': 'creation-qemu=9.2.0,ctime=1800000000', 'smbios1': f'uuid={NEW_UUID}'})


def test_a_destroyed_vms_snapshots_stay_apart_from_the_new_vm_with_its_id(world):
    pve_reads_nfs_directories(world)
    vm101_made(world, 1700000000, OLD_UUID)
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    (old,) = [s['stamp'] for s in world.vm_snapshots(101)]
    old_bytes = world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{old}.raw').read_bytes()
    vm101_again(world)
    new_bytes = world.disk(world.vol1, 101, VM101_DISK).read_bytes()

    listed = world.run('vm', 'list', '-vm', 101)
    kept = world.run('vm', 'create', '-vm', 101, '-no-register', '-keep', 1)
    refused = world.run('vm', 'restore', '-vm', 101, '-snapshot', old, '-yes')
    copied = world.run('vm', 'restore', '-vm', 101, '-snapshot', old, '-as-new', 201)

    assert listed.code == 0 and kept.code == 0 and copied.code == 0, listed.err + kept.err + copied.err
    mine, theirs = listed.out.split('\n\nSnapshots of another VM that had the id 101 before')
    assert old not in mine and old in theirs and 'another VM' in theirs
    data = {s['stamp']: s['of'] for s in world.vm_snapshots(101)}
    assert data[old] == 'another VM' and list(data.values()).count('this VM') == 1
    assert old in data                                                  # -keep 1 neither counted nor deleted it
    assert refused.code == 1 and 'is of another VM that had the id 101 before' in error_lines(refused)[0]
    assert world.disk(world.vol1, 101, VM101_DISK).read_bytes() == new_bytes
    assert world.disk(world.vol1, 201, 'vm-201-disk-0.raw').read_bytes() == old_bytes
    assert world.run('vm', 'delete', '-vm', 101, '-snapshot', old).code == 0
    assert old not in {s['stamp'] for s in world.vm_snapshots(101)}


@pytest.mark.parametrize('tag, ctime, uuid, same', [
    ('c1700000000', '1700000000', None, True), ('c1700000000', '1800000000', None, False),
    ('c1700000000', None, 'a' * 32, None),                # meta gone from the config: cannot tell
    ('u' + 'a' * 32, None, 'a' * 32, True), ('u' + 'a' * 32, None, 'b' * 32, False),
    ('u' + 'a' * 32, '1800000000', 'a' * 32, False),       # made anew since: meta comes with a create only
    (None, '1800000000', 'a' * 32, None),
])
def test_which_vm_a_snapshot_is_of(tag, ctime, uuid, same):
    assert tool.Identity.same_vm(tag, (ctime, uuid, ())) is same


@pytest.mark.parametrize('tag, macs, same', [
    ('hbc2411000001', ('bc2411000001',), True), ('hbc2411000001', ('bc2411000009', 'bc2411000001'), True),
    ('hbc2411000001', ('bc2411000002',), False),   # a new CT with the id: PVE gave its NIC a MAC of its own
    ('hbc2411000001', (), None),                   # no NIC now: cannot tell
])
def test_which_container_a_snapshot_is_of_by_its_nics(tag, macs, same):
    assert tool.Identity.same_vm(tag, (None, None, macs)) is same


def test_a_containers_identity_is_its_first_nics_mac():
    config = {'net1': 'name=eth1,bridge=vmbr1,hwaddr=BC:24:11:00:00:02,type=veth',
              'net0': 'name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth', 'rootfs': 'ONTAP01:200/x.raw'}
    identity = tool.Identity.of_config(config)
    assert identity == (None, None, ('bc2411000001', 'bc2411000002'))
    assert tool.Identity.tag(identity) == 'hbc2411000001'
    assert tool.Identity.tag(tool.Identity.of_config({'rootfs': 'ONTAP01:200/x.raw'})) is None
