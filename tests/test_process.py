"""The tool as a real process: the script, the console script, and bash tab completion."""

import json
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
from world import FILE_CLONE, OLD_SNAPSHOT, signalled_run

SCRIPT = Path(__file__).resolve().parent.parent / 'pve_ontap_snapshot.py'
HTTP_STACK = ('requests', 'urllib3', 'proxmoxer')


def run(argv, env=None, **kwargs):
    environ = dict(os.environ, **(env or {}))
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=environ, check=False, **kwargs)


def console_script():
    path = shutil.which('pve-ontap-snapshot', path=os.path.dirname(sys.executable))
    if path is None:
        pytest.skip('the console script is not installed (pip install -e .)')
    return path


def test_help_from_the_script():
    result = run([sys.executable, str(SCRIPT), '--help'])
    assert result.returncode == 0
    assert 'file-clone every disk image of a VM' in result.stdout
    assert 'Exit codes: 0 done, 1 the operation failed, 2 usage or configuration error.' in result.stdout


def test_the_script_lists_snapshots_of_a_storage(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    result = run([sys.executable, str(SCRIPT), '-config', str(world.config), '-output', 'json',
                  'storage', 'list', '-storage', 'ONTAP01'])
    assert result.returncode == 0, result.stderr
    assert [s['name'] for s in json.loads(result.stdout)] == [OLD_SNAPSHOT]
    assert result.stderr == ''


def test_the_console_script_snapshots_a_vm_and_fails_in_one_line(world, cluster_dir):
    script = console_script()
    ok = run([script, '-config', str(world.config), 'vm', 'create', '-vm', '101', '-no-register'])
    bad = run([script, '-config', str(world.config), 'vm', 'create', '-vm', '999'])

    assert ok.returncode == 0, ok.stderr
    assert len(world.clones(world.vol1, 101)) == 1
    assert world.lock_record(cluster_dir).exists()     # PVE_ONTAP_SNAPSHOT_CLUSTER_DIR, not /etc/pve
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [f'ERROR: Proxmox {world.pve_host}: no VM 999 (QEMU guest) in the cluster']


def test_usage_errors_exit_2_from_the_script():
    result = run([sys.executable, str(SCRIPT), 'vm', 'create', '-vm', 'web'])
    assert result.returncode == 2
    assert "'web' is no VM id" in result.stderr


def complete(line, tmp_path, config=None):
    """Ask the script for completions of `line` as bash would; (completions, imported modules)."""
    out = tmp_path / 'completions'
    env = {'_ARGCOMPLETE': '1', '_ARGCOMPLETE_IFS': '\n', 'COMP_LINE': line, 'COMP_POINT': str(len(line)),
           '_ARGCOMPLETE_STDOUT_FILENAME': str(out), 'PYTHONPROFILEIMPORTTIME': '1'}
    result = run([sys.executable, str(SCRIPT)], env=env, cwd=tmp_path)
    imported = {line.split('|')[-1].strip().split('.')[0] for line in result.stderr.splitlines()
                if line.startswith('import time:')}
    return out.read_text().split('\n') if out.exists() else [], imported


def test_storage_completes_from_the_config_without_the_http_stack(world, tmp_path):
    completions, imported = complete(f'pve-ontap-snapshot -config {world.config} storage list -storage ONT',
                                     tmp_path)
    assert sorted(c.strip() for c in completions) == ['ONTAP01', 'ONTAP01-CLONE', 'ONTAP02', 'ONTAP02-CLONE']
    assert 'argcomplete' in imported
    assert not imported & set(HTTP_STACK)


def test_subcommands_complete(tmp_path):
    completions, imported = complete('pve-ontap-snapshot storage mo', tmp_path)
    assert [c.strip() for c in completions] == ['mount']
    assert not imported & set(HTTP_STACK)


def test_vm_ids_and_snapshots_complete_to_nothing_and_config_to_files(world, tmp_path):
    (tmp_path / 'config-prod.ini').write_text('')
    assert complete('pve-ontap-snapshot vm create -vm ', tmp_path)[0] in ([], [''])
    assert complete('pve-ontap-snapshot storage delete -storage ONTAP01 -snapshot ', tmp_path)[0] in ([], [''])
    assert [c.strip() for c in complete('pve-ontap-snapshot -config config-p', tmp_path)[0]] == ['config-prod.ini']


def is_capture(record):
    return record['method'] == 'POST' and record['path'].endswith('/snapshots')


def is_clone(record):
    return record['path'] == FILE_CLONE


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
    process = subprocess.Popen([sys.executable, str(SCRIPT), '-config', str(world.config), 'vm', 'create', '-vm',
                                '100', '-suspend', '-no-register'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
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


def test_a_list_piped_into_head_ends_quietly(world):
    for n in range(1000):   # more lines than a pipe holds, so head is gone before the last is written
        world.a.add_snapshot('proxmox_storage01', f'proxmox_snapshot_2024-01-01_{n // 3600:02d}:{n // 60 % 60:02d}:'
                             f'{n % 60:02d}+0000', comment='Snapshot of Proxmox storage ONTAP01')
    result = subprocess.run(f'"{sys.executable}" "{SCRIPT}" -config "{world.config}" storage list -storage ONTAP01 '
                            '| head -1', shell=True, capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.startswith('NAME')
    assert result.stderr == ''


def test_sigterm_in_the_window_still_says_that_the_vm_could_not_be_started(world):
    world.pve.vm(100).start_error = 'kvm: Permission denied'
    world.a.slow_job('POST', '/api/storage/file/clone', 1, times=None)
    _, err = signalled_run(world, ['vm', 'create', '-vm', 100, '-suspend', '-no-register'], is_clone, signal.SIGTERM)

    (line,) = [line for line in err.splitlines() if line.startswith('ERROR')]
    assert line.startswith('ERROR: stopped by SIGTERM (VM 100: snapshot ')
    assert 'was made, but VM 100 could not be started again' in line


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


def test_a_list_into_a_full_disk_fails_in_one_line(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    with open('/dev/full', 'w') as full:
        result = subprocess.run([sys.executable, str(SCRIPT), '-config', str(world.config), 'storage', 'list',
                                 '-storage', 'ONTAP01'], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                                check=False)
    assert (result.returncode, result.stderr) == (1, 'ERROR: cannot write to stdout: No space left on device\n')


def test_help_into_a_full_disk_fails_in_one_line():
    """argparse writes the help into stdout's buffer and exits: only the final flush would fail."""
    with open('/dev/full', 'w') as full:
        result = subprocess.run([sys.executable, str(SCRIPT), 'storage', 'list', '--help'], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr) == (1, 'ERROR: cannot write to stdout: No space left on device\n')


def test_a_closed_stdout_fails_a_list_but_not_a_create(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    command = f'"{sys.executable}" "{SCRIPT}" -config "{world.config}" -loglevel warn storage {{}} -storage ONTAP01 >&-'

    listing = subprocess.run(command.format('list'), shell=True, capture_output=True, text=True, timeout=60,
                             check=False)
    creating = subprocess.run(command.format('create'), shell=True, capture_output=True, text=True, timeout=60,
                              check=False)

    assert (listing.returncode, listing.stderr) == (1, 'ERROR: cannot write to stdout: it is closed\n')
    assert (creating.returncode, creating.stderr) == (0, '')
    assert len(world.vol1.snapshots) == 2


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
