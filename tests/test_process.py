"""The tool as a real process: the script, the console script, and its output into a pipe that
closes, a full disk or a closed stdout. Stop signals are test_signals.py's; tab completion is
test_completion.py's; the question on a terminal is asked in test_vm_restore.py and
test_storage_restore.py."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from world import OLD_SNAPSHOT

SCRIPT = Path(__file__).resolve().parent.parent / 'pve_ontap_snapshot.py'


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
    assert bad.stderr.splitlines() == [f'ERROR: Proxmox {world.pve_host}: no VM 999 (virtual machine) in the cluster']


def test_usage_errors_exit_2_from_the_script():
    result = run([sys.executable, str(SCRIPT), 'vm', 'create', '-vm', 'web'])
    assert result.returncode == 2
    assert "'web' is no VM id" in result.stderr


def test_a_list_piped_into_head_ends_quietly(world):
    for n in range(1000):   # more lines than a pipe holds, so head is gone before the last is written
        world.a.add_snapshot('proxmox_storage01', f'proxmox_snapshot_2024-01-01_{n // 3600:02d}:{n // 60 % 60:02d}:'
                             f'{n % 60:02d}+0000', comment='Snapshot of Proxmox storage ONTAP01')
    result = subprocess.run(f'"{sys.executable}" "{SCRIPT}" -config "{world.config}" storage list -storage ONTAP01 '
                            '| head -1', shell=True, capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.startswith('NAME')
    assert result.stderr == ''


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
