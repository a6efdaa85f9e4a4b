"""ct list, ct delete, ct hold, ct release and ct verify: the vm commands' stories for a container,
its snapshot files named as a VM's."""

import re

import pytest
from world import error_lines, sized_as_pve_sizes_them


@pytest.fixture
def cts(cts, world):
    """conftest's containers, each disk's size= as PVE writes it (for ct verify)."""
    sized_as_pve_sizes_them(world)
    return cts


def test_ct_list_shows_each_snapshot_with_its_disks_and_consistency(world, cts):
    stamp = world.vm_snapshot(201, '-no-register', kind='ct')

    listed = world.json('ct', 'list', '-ct', 201)
    text = world.run('ct', 'list', '-ct', 201).out

    (only,) = listed
    assert (only['stamp'], only['complete'], only['consistency'], only['held']) == (stamp, True, 'shutdown', False)
    assert sorted(f['disk'] for f in only['files']) == ['mp0', 'rootfs']
    assert re.search(rf'^{re.escape(stamp)}\s+snapshot\s+[0-9.]+ KiB\s+rootfs,mp0\s+complete\s+shutdown', text,
                     re.MULTILINE), text


def test_ct_hold_keeps_a_snapshot_from_keep_and_ct_delete_until_released(world, cts):
    held = world.vm_snapshot(201, '-no-register', kind='ct')
    result = world.run('ct', 'hold', '-ct', 201, '-snapshot', held, '-reason', 'before the upgrade')
    assert result.code == 0, result.err
    assert 'ct delete refuses it without -force' in result.err

    refused = world.run('ct', 'delete', '-ct', 201, '-snapshot', held)
    world.vm_snapshot(201, '-no-register', kind='ct')
    kept = world.run('ct', 'create', '-ct', 201, '-no-register', '-keep', 1)

    assert refused.code == 1
    assert error_lines(refused)[0].startswith(f'ERROR: CT 201: snapshot {held} is held by ')
    assert f'release it first (ct release -ct 201 -snapshot {held})' in refused.err
    assert kept.code == 0, kept.err
    assert 'ct release lets one go' in kept.err
    stamps = world.vm_stamps(201)
    assert held in stamps and len(stamps) == 2      # the held one, and the newest

    released = world.run('ct', 'release', '-ct', 201, '-snapshot', held)
    deleted = world.run('ct', 'delete', '-ct', 201, '-snapshot', held)

    assert released.code == 0 and deleted.code == 0, released.err + deleted.err
    assert not [name for vol in (world.vol1, world.vol2) for name in world.files(vol, 201) if held in name]
    assert f'CT 201: snapshot {held} deleted' in deleted.err


def test_ct_verify_proves_a_snapshot_and_names_a_missing_copy(world, cts):
    stamp = world.vm_snapshot(201, '-no-register', kind='ct')

    good = world.run('ct', 'verify', '-ct', 201)
    (world.vol2.path / 'images/201' / f'vm-201-disk-1-snapshot-{stamp}.raw').unlink()
    bad = world.run('ct', 'verify', '-ct', 201)

    assert good.code == 0, good.err
    assert good.out.splitlines() == [f'ok   CT 201 {stamp}: 3 files']
    assert bad.code == 1
    assert error_lines(bad) == [(f'ERROR: CT 201 {stamp}: images/201/vm-201-disk-1-snapshot-{stamp}.raw on ONTAP02 '
                                 'is missing')]


def test_ct_verify_all_verifies_containers_only(world, cts):
    stamp = world.vm_snapshot(201, '-no-register', kind='ct')
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0

    result = world.run('ct', 'verify', '-all')

    assert result.code == 0, result.err
    assert result.out.splitlines() == [f'ok   CT 201 {stamp}: 3 files']


def test_a_snapshot_of_a_ct_that_had_the_id_before_is_told_by_its_nic_and_never_put_onto_the_new_one(world, cts):
    ct = world.pve.ct(201)
    ct.config['net0'] = 'name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth'
    old = world.vm_snapshot(201, '-no-register', kind='ct')
    # CT 201 destroyed and made anew with its id: PVE gives the new CT's NIC a MAC of its own.
    ct.config['net0'] = 'name=eth0,bridge=vmbr0,hwaddr=BC:24:11:0A:0B:0C,ip=dhcp,type=veth'
    new = world.vm_snapshot(201, '-no-register', kind='ct')

    listed = {s['stamp']: (s['of'], s['identity']) for s in world.json('ct', 'list', '-ct', 201)}
    text = world.run('ct', 'list', '-ct', 201).out
    refused = world.run('ct', 'restore', '-ct', 201, '-snapshot', old, '-yes')
    kept = world.run('ct', 'create', '-ct', 201, '-no-register', '-keep', 1)

    assert listed == {old: ('another CT', 'hbc2411000001'), new: ('this CT', 'hbc24110a0b0c')}
    mine, theirs = text.split('\n\nSnapshots of another CT that had the id 201 before (ct restore -as-new NEWID')
    assert old not in mine and old in theirs
    assert refused.code == 1 and error_lines(refused) == [
        (f'ERROR: CT 201: snapshot {old} is of another CT that had the id 201 before, not of CT 201 now: its disks '
         'are not put onto this CT; make a CT of it with -as-new NEWID')]
    after = {s['stamp'] for s in world.json('ct', 'list', '-ct', 201)}
    assert kept.code == 0, kept.err
    assert old in after and new not in after and len(after) == 2     # -keep 1 never counts or deletes another CT's
