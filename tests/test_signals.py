"""Stop signals (SIGTERM, SIGINT, a second Ctrl-C) while a command runs as a process of its own:
what must not be cut short (the window a guest waits in, a restore, a revert, the VMs begun) ends
first, every guest runs again, captures are deleted, and the last line says what was made."""

import signal
import subprocess
import types

import pytest
from world import (
    FILE_CLONE,
    OLD_SNAPSHOT,
    add_vm_on_both_clusters,
    as_typed,
    interrupt_once_cloning,
    is_capture,
    signalled_run,
    slow_clones,
    with_running_guests,
)


def is_clone(record):
    return record['path'] == FILE_CLONE


# -- vm create of a VM: the window the guest waits in

@pytest.mark.parametrize('mode', ['-freeze', '-suspend', '-pause'])
def test_sigterm_inside_the_window_waits_until_the_vm_runs_again(world, mode):
    vm = world.with_agent(100)
    world.write_config(defaults='freeze_timeout = 30\n')
    world.a.slow_job('POST', r'/snapshots$', 1)     # the capture, the one thing inside the window
    code, err = signalled_run(world, ['vm', 'create', '-vm', 100, mode, '-no-register'], is_capture, signal.SIGTERM)

    # the signal waits until the VM runs again; then the run stops, the snapshot made and named
    assert code == 128 + signal.SIGTERM
    stamp = err.splitlines()[-1].split('snapshot ')[1].split(' ')[0]
    assert err.splitlines()[-1] == f'ERROR: stopped by SIGTERM (VM 100: snapshot {stamp} of 6 disk(s) was made)'
    assert not vm.agent_frozen and vm.status == vm.qmpstatus == 'running' and not vm.lock
    assert len([f for f in world.snapshot_files(100) if stamp in f]) == 6
    assert not world.vol1.snapshots and not world.vol2.snapshots


def slow_suspend(pve, seconds, on_down):
    """The VM is down at once, and on_down() is called; but its suspend task takes `seconds`
    PVE seconds to end."""
    async def _do_suspend(self, vm, user, params):
        async def body():
            vm.status, vm.lock, vm.config['lock'] = 'stopped', 'suspended', 'suspended'
            on_down()
            await self.pause(seconds)
        return await self.task(vm.node, 'qmsuspend', vm.vmid, user, body, vm=vm)
    pve._do_suspend = types.MethodType(_do_suspend, pve)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_the_vm_is_being_suspended_lets_the_snapshot_finish_first(world, signum):
    world.pve.time_scale = 0.01
    started = []
    # sent from fakepve as the VM goes down, while its suspend task still runs
    slow_suspend(world.pve, 100, on_down=lambda: started[0].send_signal(signum))
    process = subprocess.Popen(as_typed(world, ['vm', 'create', '-vm', 100, '-suspend', '-no-register']),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started.append(process)
    _, err = process.communicate(timeout=60)

    assert process.returncode == 128 + signum, err
    assert world.pve.vm(100).status == 'running' and not world.pve.vm(100).lock
    assert err.splitlines()[-1].startswith(f'ERROR: stopped by {signum.name} (VM 100: snapshot ')
    assert err.splitlines()[-1].endswith('of 6 disk(s) was made)')


def test_a_second_ctrl_c_during_a_shutdown_is_acknowledged_and_does_not_cut_it_short(world):
    world.pve.time_scale = 0.01
    vm = world.pve.vm(100)
    world.a.slow_job('POST', r'/snapshots$', 3)     # the window outlasts both presses
    # two presses, not one: the handler must see each
    code, err = signalled_run(world, ['vm', 'create', '-vm', 100, '-shutdown', '-no-register'], is_capture,
                              signal.SIGINT, signal.SIGINT)

    assert code == 128 + signal.SIGINT, err
    assert err.count('SIGINT: finishing first what must not be cut short') == 2
    assert err.splitlines()[-1].endswith('of 6 disk(s) was made)')
    assert vm.status == vm.qmpstatus == 'running' and not vm.lock
    world.a.wait_for_jobs()
    made = world.snapshot_files(100)
    assert len(made) == 6


def test_sigterm_in_the_window_still_says_that_the_vm_could_not_be_started(world):
    world.pve.vm(100).start_error = 'kvm: Permission denied'
    world.a.slow_job('POST', '/api/storage/file/clone', 1, times=None)
    _, err = signalled_run(world, ['vm', 'create', '-vm', 100, '-suspend', '-no-register'], is_clone, signal.SIGTERM)

    (line,) = [line for line in err.splitlines() if line.startswith('ERROR')]
    assert line.startswith('ERROR: stopped by SIGTERM (VM 100: snapshot ')
    assert 'was made, but VM 100 could not be started again' in line


# -- vm create of several VMs

# The kernel hands a signal to the process to any of its threads (signal(7)); Python runs its
# handler in the main thread only, which must not wait for a VM to end before it sees it.
@pytest.mark.parametrize('to_a_worker', [False, True], ids=['main-thread', 'worker-thread'])
def test_ctrl_c_begins_no_new_vm_lets_those_begun_finish_and_names_what_was_made(world, to_a_worker):
    vmids = list(range(103, 109))
    for vmid in vmids:
        add_vm_on_both_clusters(world, vmid)
    slow_clones(world, 1)
    err = interrupt_once_cloning(world, 'vm', 'create', '-vm', *vmids, '-shutdown', '-parallel', 2, '-no-register',
                                 to_a_worker=to_a_worker)

    last = err.splitlines()[-1]
    made = [vmid for vmid in vmids if world.vm_stamps(vmid)]
    left = [vmid for vmid in vmids if not world.vm_stamps(vmid)]
    # at most the two VMs begun before the signal are made, the others are not begun
    assert 1 <= len(made) <= 2 and left == vmids[len(made):]
    assert last == ('ERROR: stopped by SIGINT (' + '; '.join(
                    f'VM {vmid}: snapshot {world.vm_stamps(vmid)[0]} of 2 disk(s) was made' for vmid in made) +
                    f'; not begun: VM {", ".join(map(str, left))})')
    # every VM runs, and those not begun were never shut down
    assert all(world.pve.vm(vmid).status == 'running' and not world.pve.vm(vmid).lock for vmid in vmids)
    assert [vmid for vmid in vmids if 'shutdown' in world.power_actions(vmid)] == made


def test_ctrl_c_during_a_run_still_deletes_the_shared_captures(world, cluster_dir):
    vmids = list(range(103, 109))
    for vmid in vmids:
        add_vm_on_both_clusters(world, vmid)
    slow_clones(world, 1)
    err = interrupt_once_cloning(world, 'vm', 'create', '-vm', *vmids, '-parallel', 2, '-no-register')

    last = err.splitlines()[-1]
    made = [vmid for vmid in vmids if world.snapshot_files(vmid)]
    assert 1 <= len(made) <= 2 and last.endswith(f'not begun: VM {", ".join(map(str, vmids[len(made):]))})')
    assert not world.vol1.snapshots and not world.vol2.snapshots
    assert len(world.ontap_requests('POST', '*/snapshots')) == len(world.ontap_requests('DELETE', '*/snapshots/*')) == 2
    assert world.noted_captures(cluster_dir) == []


# -- vm restore

def test_sigterm_during_a_restore_lets_it_finish_and_says_so(world):
    stamp = '2024-03-12_10:00:00+0000'
    world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{stamp}.raw').write_bytes(b'then' * 2048)
    world.pve.vm(101).status = world.pve.vm(101).qmpstatus = 'running'
    world.a.slow_job('POST', '/api/storage/file/clone', 1, times=None)
    code, err = signalled_run(world, ['vm', 'restore', '-vm', 101, '-snapshot', stamp, '-shutdown', '-yes'], is_clone,
                              signal.SIGTERM)

    assert code == 128 + signal.SIGTERM
    assert err.splitlines()[-1] == (f'ERROR: stopped by SIGTERM (VM 101: disks scsi0 restored from snapshot {stamp} '
                                    'first)')
    assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == b'then' * 2048
    assert world.pve.vm(101).status == 'running'


# -- storage create -freeze and -pause

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


# -- storage restore

def test_sigterm_while_ontap_reverts_a_storage_waits_for_its_answer_and_says_so(world):
    old = OLD_SNAPSHOT
    world.a.add_snapshot('proxmox_storage01', old)
    disk = world.disk(world.vol1, 101, 'vm-101-disk-0.raw')
    original = disk.read_bytes()
    disk.write_bytes(b'later')
    world.pve.vm(100).status = 'stopped'
    world.write_config(defaults='read_timeout = 6\n')   # return_timeout = 1 s: the job is polled
    world.a.slow_job('PATCH', r'^/api/storage/volumes/', 2)
    code, err = signalled_run(world, ['storage', 'restore', '-storage', 'ONTAP01', '-snapshot', old, '-yes'],
                              lambda record: record['method'] == 'PATCH', signal.SIGTERM)

    assert code == 128 + signal.SIGTERM, err
    assert err.splitlines()[-1] == (f'ERROR: stopped by SIGTERM (storage ONTAP01: volume proxmox_storage01 reverted '
                                    f'to snapshot {old} first)')
    assert disk.read_bytes() == original
