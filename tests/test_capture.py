"""vm create captures a running VM's disks first: one short-lived volume snapshot per volume,
taken while the guest waits (if a mode asks it to), cloned from once it runs again, then
deleted; one that ONTAP keeps busy is renamed to a leftover that the next run deletes."""


from world import FILE_CLONE, VM100, VM100_ONTAP_DISKS, error_lines

import pve_ontap_snapshot as tool

SNAPSHOT_OF = {'ide0': 'vm-100-disk-0.raw', 'sata0': 'vm-100-disk-1.raw', 'scsi0': 'vm-100-disk-2.qcow2',
               'virtio0': 'vm-100-disk-4.raw', 'efidisk0': 'vm-100-disk-5.raw', 'tpmstate0': 'vm-100-disk-6.raw'}


def volume_of(world, key):
    return world.vol1 if VM100[key].startswith('ONTAP01:') else world.vol2


def live_disks(world):
    """{disk key: bytes of VM 100's live disk} for every ONTAP disk."""
    return {key: world.disk(volume_of(world, key), 100, name).read_bytes() for key, name in SNAPSHOT_OF.items()}


def snapshot_disks(world):
    """{disk key: bytes of its clone} of VM 100's one snapshot."""
    found = {}
    for key, name in SNAPSHOT_OF.items():
        stem = name.rsplit('.', 1)[0]
        (clone,) = [f for f in world.files(volume_of(world, key), 100) if f.startswith(stem + '-snapshot-')]
        found[key] = world.disk(volume_of(world, key), 100, clone).read_bytes()
    return found


def change_every_disk_after_the_first_clone(world):
    """The guest goes on writing while the clones are made: right after the first file clone (on
    either cluster), every live disk of VM 100 changes. Returns the bytes from before."""
    before = live_disks(world)
    changed = []

    def write(volume, source, destination):
        if not changed:
            changed.append(destination)
            for key, name in SNAPSHOT_OF.items():
                world.disk(volume_of(world, key), 100, name).write_bytes(b'written later ' + key.encode())
    world.a.on_clone = world.b.on_clone = write
    return before


def capture_snapshots(world):
    return sorted(name for vol in (world.vol1, world.vol2) for name in vol.snapshots)


# -- one instant

def test_every_disk_of_a_paused_vm_holds_the_bytes_of_one_instant(world):
    before = change_every_disk_after_the_first_clone(world)

    result = world.run('vm', 'create', '-vm', 100, '-pause', '-no-register')

    assert result.code == 0, result.err
    assert snapshot_disks(world) == before      # not one disk holds what was written during the clones
    assert live_disks(world) != before
    assert capture_snapshots(world) == []
    assert 'different instants' not in result.err


def test_disks_on_one_volume_are_taken_at_one_instant_without_any_pause(world):
    before = change_every_disk_after_the_first_clone(world)

    result = world.run('vm', 'create', '-vm', 100, '-no-register')

    assert result.code == 0, result.err
    assert snapshot_disks(world) == before
    assert not world.power_actions()
    # two volumes, two captures, two instants: said, with the way to one
    assert 'VM 100: its disks on 2 volumes are captured at 2 different instants; -pause takes them at one' in result.err


def test_a_stopped_vm_is_cloned_straight_from_its_disks(world):
    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 0, result.err
    sources = [r['body']['source_path'] for r in world.ontap_requests('POST', FILE_CLONE)]
    assert sources == ['images/101/vm-101-disk-0.raw']
    assert not world.ontap_requests(path='*/snapshots')


# -- the guest waits only for the captures

def test_pause_leaves_the_vm_running_and_never_hibernated(world):
    vm = world.pve.vm(100)
    seen = []     # at each ONTAP change: what it was, the VM's state, and how many PVE requests came before
    for emu in (world.a, world.b):
        emu.on_request = lambda r: r['method'] != 'GET' and seen.append(
            (r['method'], r['path'].rsplit('/', 1)[1], vm.status, vm.qmpstatus, vm.lock, len(world.pve.requests)))

    result = world.run('vm', 'create', '-vm', 100, '-pause', '-no-register')

    assert result.code == 0, result.err
    assert world.power_requests() == [('suspend', {}), ('resume', {})]          # in memory: no todisk, no start
    resumed = next(i for i, (m, p, _) in enumerate(world.pve.requests) if p.endswith('/status/resume'))
    captures = [s for s in seen if s[:2] == ('POST', 'snapshots')]
    clones = [s for s in seen if s[:2] == ('POST', 'clone')]
    assert len(captures) == 2 and all(s[2:5] == ('running', 'paused', None) for s in captures)
    assert len(clones) == 6 and all(s[3] == 'running' and s[5] > resumed for s in clones)
    assert (vm.status, vm.qmpstatus, vm.lock) == ('running', 'running', None)
    assert 'lock' not in vm.config
    assert 'VM 100 was paused for' in result.err


def test_the_thaw_comes_before_the_first_clone(world):
    vm = world.with_agent(100)
    thawed_at_clone = []
    for emu in (world.a, world.b):
        emu.on_request = lambda r: r['path'] == '/api/storage/file/clone' and thawed_at_clone.append(
            [c for c, _ in vm.agent_requests][-1] == 'fsfreeze-thaw' and not vm.agent_frozen)

    result = world.run('vm', 'create', '-vm', 100, '-freeze', '-no-register')

    assert result.code == 0, result.err
    assert thawed_at_clone == [True] * len(VM100_ONTAP_DISKS)


def test_a_guest_that_gave_up_its_freeze_is_no_consistent_snapshot(world):
    world.with_agent(100)
    world.pve.fail('POST', '/nodes/pve1/qemu/100/agent/fsfreeze-thaw', 500,
                   "VM 100 qmp command 'guest-fsfreeze-thaw' failed - couldn't hold writes: fsfreeze is limited up "
                   'to 10 seconds')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-freeze', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'gave up its freeze before the thaw, as Windows VSS does after about 10 s' in line
    assert 'not consistent; nothing was cloned' in line and 'may still be frozen' not in line
    assert world.state() == before


def test_a_vm_whose_agent_setting_turns_freezing_off_is_not_frozen(world):
    vm = world.pve.vm(100)
    vm.config['agent'], vm.agent = 'enabled=1,freeze-fs=0', {}
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-freeze')

    assert error_lines(result) == [('ERROR: VM 100: its agent setting turns freezing off (agent: enabled=1,freeze-fs=0); '
                                    'use -pause, or allow freezing (freeze-fs=1)')]
    assert world.state() == before and not vm.agent_requests


def test_a_pause_that_fails_leaves_the_vm_running_and_nothing_taken(world):
    world.pve.fail('POST', '/nodes/pve1/qemu/100/status/suspend', 500, 'VM 100 qmp command failed - got timeout')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-pause')

    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: suspend VM 100: VM 100 qmp command failed - '
                                    'got timeout')]
    assert world.state() == before
    assert not world.ontap_changes()


def test_a_vm_that_cannot_be_resumed_is_named_with_what_to_run(world):
    world.pve.fail('POST', '/nodes/pve1/qemu/100/status/resume', 500, 'VM 100 qmp command failed - got timeout',
                   times=None)

    result = world.run('vm', 'create', '-vm', 100, '-pause', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'of 6 disk(s) was made, but VM 100 could not be resumed after' in line
    assert 'may still be paused: check it, and resume it by hand ("qm resume 100")' in line
    assert len([f for vol in (world.vol1, world.vol2) for f in world.clones(vol, 100)]) == 6


# -- captures taken back

def test_a_failed_capture_takes_back_the_other_and_clones_nothing(world):
    world.b.fail('POST', r'/snapshots$', status=400, code='524479', message='Volume is offline.')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-pause', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith('ERROR: VM 100: snapshot ') and 'Volume is offline.' in line
    assert line.endswith('nothing was cloned')
    assert world.state() == before          # the capture on ONTAP01 is deleted again
    assert world.pve.vm(100).qmpstatus == 'running'
    assert not world.ontap_requests(path=FILE_CLONE)


def test_captures_never_show_as_storage_snapshots(world, monkeypatch):
    monkeypatch.setattr(tool.Captures, 'DELETE_WAIT', 0.2)
    world.a.busy_after_clone = 60
    assert world.run('vm', 'create', '-vm', 100, '-no-register').code == 0
    assert [name.startswith('pve_ontap_leftover_capture_') for name in world.vol1.snapshots] == [True]

    listed = world.json('storage', 'list', '-storage', 'ONTAP01')
    kept = world.run('storage', 'create', '-storage', 'ONTAP01', '-keep', 1)

    assert listed == []
    assert kept.code == 0 and len(world.vol1.snapshots) == 2      # -keep 1 counted only its own


# -- busy captures, leftovers and the next run

def record_of(world, cluster_dir, storage='ONTAP01'):
    return world.lock_record(cluster_dir, storage).read_text().splitlines()[1:]


def test_a_busy_capture_is_renamed_and_the_next_run_deletes_it(world, cluster_dir, monkeypatch):
    monkeypatch.setattr(tool.Captures, 'DELETE_WAIT', 0.3)
    world.a.busy_after_clone = 60

    first = world.run('vm', 'create', '-vm', 100, '-no-register')

    assert first.code == 0, first.err
    (leftover,) = world.vol1.snapshots
    capture = 'pve_ontap_' + leftover.removeprefix('pve_ontap_leftover_')
    assert leftover.startswith('pve_ontap_leftover_capture_') and leftover.endswith('_vm100')
    assert (f'WARNING: capture snapshot {capture} of volume proxmox_storage01 (ONTAP {world.a.host}) is still busy '
            f'after 0.3 s: renamed to {leftover}; the next vm create on the volume deletes it once it is 10 minutes '
            'old') in first.err
    assert world.vol1.snapshots[leftover].comment == tool.Names.LEFTOVER_COMMENT
    assert not world.vol2.snapshots         # not busy there: deleted at once
    assert [line.split()[0] for line in record_of(world, cluster_dir)] == ['vm100', capture]

    # a run soon after leaves it (younger than LEFTOVER_AGE) and spends no request on it
    world.a.busy_after_clone = 0
    world.a.requests.clear()
    second = world.run('vm', 'create', '-vm', 101, '-no-register')
    assert second.code == 0, second.err
    assert leftover in world.vol1.snapshots
    assert not world.ontap_requests(path='*/snapshots', on=world.a)

    # once it is old enough (and ONTAP lets go of it), the next run on the volume deletes it
    monkeypatch.setattr(tool.Captures, 'LEFTOVER_AGE', 0)
    world.vol1.snapshots[leftover].busy_until = 0
    third = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert third.code == 0, third.err
    assert world.vol1.snapshots == {}
    assert f'storage ONTAP01: leftover capture snapshot {leftover} of volume proxmox_storage01 deleted' in third.err
    assert capture not in '\n'.join(record_of(world, cluster_dir))


def test_a_capture_left_by_a_run_that_died_is_deleted_by_the_next(world, cluster_dir):
    capture = 'pve_ontap_capture_2024-03-13_14:42:47+0000_vm100'
    world.a.add_snapshot('proxmox_storage01', capture, create_time='2024-03-13T14:42:47+00:00')
    record = world.lock_record(cluster_dir)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f'4242 pve1 2024-03-13_14:42:40+0000 vm create -vm 100\n{capture} 2024-03-13_14:42:47+0000\n')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 0, result.err
    assert world.vol1.snapshots == {}
    assert capture not in record.read_text()


def test_a_capture_delete_whose_answer_is_lost_is_left_for_the_next_run(world, cluster_dir, monkeypatch):
    world.a.lose_answer('DELETE', r'/snapshots/')

    result = world.run('vm', 'create', '-vm', 100, '-no-register')

    assert result.code == 0, result.err
    (line,) = [line for line in result.err.splitlines() if 'whether it was deleted is unknown' in line]
    assert line.startswith('WARNING: capture snapshot pve_ontap_capture_') and 'the next vm create on the volume' in line
    (noted,) = [entry.split()[0] for entry in record_of(world, cluster_dir) if entry.startswith('pve_ontap_capture_')]

    # ONTAP did delete it: the next run finds it gone and strikes it from the record, deleting nothing
    monkeypatch.setattr(tool.Captures, 'LEFTOVER_AGE', 0)
    world.a.requests.clear()
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    assert noted not in '\n'.join(record_of(world, cluster_dir))
    assert not world.ontap_requests('DELETE', on=world.a)


def test_a_capture_that_stays_busy_and_cannot_be_renamed_is_named(world, monkeypatch):
    monkeypatch.setattr(tool.Captures, 'DELETE_WAIT', 0.2)
    world.b.busy_after_clone = 60
    world.b.fail('PATCH', r'/snapshots/', status=409, code='8', message='resource in use')

    result = world.run('vm', 'create', '-vm', 100, '-no-register')

    assert result.code == 0, result.err
    (capture,) = world.vol2.snapshots
    assert (f'capture snapshot {capture} of volume proxmox_storage02 (ONTAP {world.b.host}) is still busy after 0.2 s '
            f'and could not be renamed to pve_ontap_leftover_{capture.removeprefix("pve_ontap_")}') in result.err

