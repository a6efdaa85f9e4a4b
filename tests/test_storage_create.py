"""storage create: an ONTAP snapshot of the volume behind a storage, named and commented as the
original named it, with a record (a manifest, the config in it) of every guest on the storage
written into pve-ontap-snapshot/ of the volume just before it; -keep, -label and -min-age; and
-freeze and -pause: every running VM with a disk on the storage is frozen through its guest agent
(or, with -pause, paused in memory when it cannot be), the volume snapshot is taken, and every
guest runs again — also when the snapshot fails, outlasts freeze_timeout, or a signal comes."""

import re
import signal

import pytest
from world import error_lines, signalled_run, with_running_guests

THAW_TOO_LATE = ("VM {vmid} qmp command 'guest-fsfreeze-thaw' failed - couldn't hold writes: fsfreeze is limited "
                 'up to 10 seconds')


# -- -freeze and -pause

def note_guests_at_the_snapshot(world, vms):
    """[{vmid: (frozen, qmpstatus)}] at each snapshot POST on cluster A."""
    seen = []
    world.a.on_request = lambda r: r['method'] == 'POST' and r['path'].endswith('/snapshots') and seen.append(
        {vmid: (vm.agent_frozen, vm.qmpstatus) for vmid, vm in vms.items()})
    return seen


def agent_commands(vm):
    return [command for command, _ in vm.agent_requests if command != 'ping']


def test_a_frozen_storage_snapshot_thaws_every_guest(world):
    vms = with_running_guests(world)
    seen = note_guests_at_the_snapshot(world, vms)

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    # at the snapshot, the guests with an agent were frozen; the others ran on
    assert seen == [{100: (True, 'running'), 101: (True, 'running'), 103: (False, 'running'),
                     104: (False, 'running')}]
    assert agent_commands(vms[100]) == agent_commands(vms[101]) == ['fsfreeze-freeze', 'fsfreeze-thaw']
    assert not any(vm.agent_frozen for vm in vms.values())
    assert agent_commands(vms[104]) == [] and not world.power_requests(103)
    assert re.search(rf'storage ONTAP01: snapshot {re.escape(name)} taken with VM 100 frozen for \S+ s, VM 101 frozen '
                     r'for \S+ s', result.err)
    assert (f'INFO: storage ONTAP01: snapshot {name} is crash-consistent for VM 103: no guest agent'
            in result.err.splitlines())
    assert f'snapshot {name} is crash-consistent for CT 200: a container: there is no freezing it' in result.err
    assert 'WARNING' not in result.err


def test_pause_pauses_in_memory_what_cannot_be_frozen_and_never_hibernates(world):
    vms = with_running_guests(world)
    vms[101].config['agent'] = 'enabled=1,freeze-fs-on-backup=0'     # its admin turned freezing off
    seen = note_guests_at_the_snapshot(world, vms)

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-pause')

    assert result.code == 0, result.err
    assert seen == [{100: (True, 'running'), 101: (False, 'paused'), 103: (False, 'paused'), 104: (False, 'running')}]
    for vmid in (101, 103):
        assert world.power_requests(vmid) == [('suspend', {}), ('resume', {})]
        assert (vms[vmid].status, vms[vmid].qmpstatus, vms[vmid].lock) == ('running', 'running', None)
    assert 'VM 101 paused for' in result.err and '(its agent setting turns freezing off)' in result.err
    assert 'VM 103 paused for' in result.err and '(no guest agent)' in result.err
    assert not world.power_requests(100) and not world.power_requests(104)


def test_every_guest_is_thawed_also_when_the_snapshot_fails(world):
    vms = with_running_guests(world)
    world.a.fail('POST', r'/snapshots$', status=400, code='525062', message='too many snapshots')

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-pause')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'too many snapshots' in line
    assert not world.storage_snapshots()
    assert not any(vm.agent_frozen for vm in vms.values())
    assert agent_commands(vms[100])[-1] == 'fsfreeze-thaw'
    assert world.power_requests(103) == [('suspend', {}), ('resume', {})] and vms[103].qmpstatus == 'running'


def test_guests_are_let_go_when_the_snapshot_outlasts_freeze_timeout(world):
    vms = with_running_guests(world)
    world.write_config(defaults='freeze_timeout = 0.2\n')
    world.a.slow_job('POST', r'/snapshots$', 1.0)

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    assert (f'WARNING: storage ONTAP01: snapshot {name}: the snapshot outlasted the bound of 0.2 s (freeze_timeout), '
            'so it is crash-consistent for VM 100, VM 101 (the manifests say frozen)') in result.err.splitlines()
    assert not any(vm.agent_frozen for vm in vms.values())


def test_a_guest_that_gave_up_its_freeze_is_named(world):
    vms = with_running_guests(world)
    world.pve.fail('POST', '/nodes/pve2/qemu/101/agent/fsfreeze-thaw', 500, THAW_TOO_LATE.format(vmid=101))

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    (line,) = [line for line in result.err.splitlines() if line.startswith('WARNING')]
    assert line.startswith(f'WARNING: storage ONTAP01: snapshot {name} is crash-consistent for VM 101: the guest of '
                           'VM 101 gave up its freeze before the thaw, as Windows VSS does after about 10 s')
    assert re.search(r'taken with VM 100 frozen for \S+ s$', result.err, re.MULTILINE)
    assert not vms[100].agent_frozen


def test_a_guest_that_cannot_be_thawed_fails_the_run_and_the_snapshot_stays(world):
    with_running_guests(world)
    world.pve.fail('POST', '/nodes/pve1/qemu/100/agent/fsfreeze-thaw', 500, 'VM 100 qmp command failed - timeout')
    for day in (11, 12):
        world.a.add_snapshot('proxmox_storage01', f'proxmox_snapshot_2024-03-{day}_10:00:00+0000',
                             create_time=f'2024-03-{day}T10:00:00+00:00')

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze', '-keep', 1)

    assert result.code == 1
    (line,) = error_lines(result)
    (name,) = world.storage_snapshots()      # made, and -keep still ran
    assert line == (f'ERROR: storage ONTAP01: snapshot {name} was made, but the guest of VM 100 could not be thawed '
                    'and may still be frozen: run "qm guest cmd 100 fsfreeze-thaw" (Proxmox '
                    f'{world.pve_host}: guest agent fsfreeze-thaw in VM 100: VM 100 qmp command failed - timeout)')


def test_an_agent_that_does_not_answer_leaves_its_vm_crash_consistent_or_paused(world):
    vms = with_running_guests(world)
    vms[101].agent = None       # configured, but no agent runs in the guest

    frozen = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze')
    paused = world.run('storage', 'create', '-storage', 'ONTAP01', '-pause')

    assert frozen.code == paused.code == 0, frozen.err + paused.err
    first = world.storage_snapshots()[0]
    assert [line for line in frozen.err.splitlines() if line.startswith('WARNING')] == [
        (f'WARNING: storage ONTAP01: snapshot {first} is crash-consistent for VM 101: its guest agent does not answer '
         f'(Proxmox {world.pve_host}: guest agent ping in VM 101: QEMU guest agent is not running)')]
    assert 'VM 101: its guest agent does not answer' in paused.err and 'so it was paused in memory instead' in paused.err
    assert world.power_requests(101) == [('suspend', {}), ('resume', {})]


def test_a_dry_run_freezes_nothing(world):
    vms = with_running_guests(world)
    before = world.state()

    result = world.run('-dry-run', 'storage', 'create', '-storage', 'ONTAP01', '-pause')

    assert result.code == 0, result.err
    # the records of the guests come first (test_storage_records.py)
    steps = [line.split(' (')[0] for line in result.out.splitlines() if 'pve-ontap-snapshot' not in line]
    assert steps[:3] == ['would guest agent fsfreeze-freeze in VM 100', 'would guest agent fsfreeze-freeze in VM 101',
                         'would suspend VM 103']
    assert steps[3].startswith('would create snapshot proxmox_snapshot_')
    assert steps[4:] == ['would guest agent fsfreeze-thaw in VM 100', 'would guest agent fsfreeze-thaw in VM 101',
                         'would resume VM 103']
    assert world.state() == before and not any(vm.agent_frozen for vm in vms.values())


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_guests_are_frozen_thaws_them_first(world, signum):
    vms = with_running_guests(world)
    world.write_config(defaults='freeze_timeout = 30\n')
    world.a.slow_job('POST', r'/snapshots$', 1)
    code, err = signalled_run(world, ['storage', 'create', '-storage', 'ONTAP01', '-pause', '-keep', '1'],
                              lambda record: record['method'] == 'POST' and record['path'].endswith('/snapshots'),
                              signum)

    assert code == 128 + signum, err
    (name,) = world.storage_snapshots()
    assert err.splitlines()[-1] == f'ERROR: stopped by {signum.name} (storage ONTAP01: snapshot {name} was made)'
    assert not any(vm.agent_frozen for vm in vms.values())
    assert vms[103].qmpstatus == 'running' and world.power_requests(103)[-1][0] == 'resume'
