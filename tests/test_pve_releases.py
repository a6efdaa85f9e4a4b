"""PVE 8 and PVE 9, where they differ for this tool: the guest agent's privileges (PVE 9's
VM.GuestAgent.*, PVE 8's VM.Monitor). Each release with the README's least-privilege role for
it freezes guests for vm create and storage create and passes doctor; with the other
release's role, PVE refuses the freeze, the run says so, and doctor warns beforehand."""

import pytest
from world import error_lines, log_in_with_role, play_pve_release, readme_role

USER, PASSWORD = 'ontapsnap@pve', 'snap-Secr3t'


def agent_calls(world):
    """The guest agent commands PVE was asked through its API, pings too, in order."""
    return [r.path.rsplit('/', 1)[-1] for r in world.pve_requests(path='*/agent/*')]


def doctor_lines(world):
    return {line['check']: (line['status'], line['found']) for line in world.json('doctor')}


@pytest.mark.parametrize('major', [8, 9])
def test_the_readme_role_of_each_release_freezes_a_vm_for_vm_create(world, major):
    play_pve_release(world, major)
    log_in_with_role(world, USER, PASSWORD, readme_role(major))
    world.with_agent()

    result = world.run('-output', 'json', 'vm', 'create', '-vm', 100, '-freeze')

    assert result.code == 0, result.err
    assert agent_calls(world) == ['ping', 'fsfreeze-freeze', 'fsfreeze-thaw']
    (snapshot,) = world.json('vm', 'list', '-vm', 100)
    assert snapshot['consistency'] == 'frozen'


@pytest.mark.parametrize('major', [8, 9])
def test_the_readme_role_of_each_release_freezes_guests_for_storage_create(world, major):
    play_pve_release(world, major)
    log_in_with_role(world, USER, PASSWORD, readme_role(major))
    world.with_agent()

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-freeze')

    assert result.code == 0, result.err
    (name,) = [n for n in world.vol1.snapshots if n.startswith('proxmox_snapshot_')]
    assert world.vol1.snapshots[name].comment.endswith('; guests: 1 frozen, 1 shutdown')
    assert agent_calls(world)[-2:] == ['fsfreeze-freeze', 'fsfreeze-thaw']


@pytest.mark.parametrize('major', [8, 9])
def test_each_release_passes_doctor_with_its_role_and_warns_with_the_others(world, major):
    play_pve_release(world, major)
    log_in_with_role(world, USER, PASSWORD, readme_role(major))
    lines = doctor_lines(world)
    assert all(status == 'ok' for check, (status, _) in lines.items() if check.startswith('privileges')), lines
    assert lines['proxmox release'][1].startswith(f'PVE {major}.')

    other = 'other@pve'
    log_in_with_role(world, other, PASSWORD, readme_role(17 - major))
    lines = doctor_lines(world)

    lacking = {check for check, (status, _) in lines.items() if check.startswith('privileges') and status != 'ok'}
    assert lacking == {'privileges for vm create -freeze', 'privileges for storage create -freeze',
                       'privileges for storage create -pause'}
    wanted = 'VM.Monitor' if major == 8 else 'VM.GuestAgent.Audit or VM.GuestAgent.Unrestricted'
    assert f'{other} lacks {wanted} on /vms' in lines['privileges for vm create -freeze'][1]


@pytest.mark.parametrize('major', [8, 9])
def test_with_the_other_releases_role_pve_refuses_the_freeze_and_the_run_says_so(world, major):
    play_pve_release(world, major)
    log_in_with_role(world, USER, PASSWORD, readme_role(17 - major))
    vm = world.with_agent()

    result = world.run('vm', 'create', '-vm', 100, '-freeze')

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith(f'ERROR: VM 100: PVE refuses its guest agent to {USER} (grant VM.GuestAgent.Audit and '
                           'VM.GuestAgent.FileSystemMgmt on PVE 9, VM.Monitor on PVE 8: README, Least privilege), '
                           'nothing frozen: ')
    assert vm.status == 'running' and agent_calls(world) == ['ping']
    assert not [name for name in world.files(world.vol1, 100) if '-snapshot-' in name]
