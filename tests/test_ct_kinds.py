"""Containers beside VMs: a CT id given to a vm command, or a VM id to a ct command, is refused in
one line saying which it is, and neither command tree's -all touches the other's guests."""

import pytest
from world import add_containers, error_lines


@pytest.fixture
def cts(world):
    return add_containers(world)


@pytest.mark.parametrize('argv', [
    ('vm', 'create', '-vm', 200), ('vm', 'list', '-vm', 200), ('vm', 'verify', '-vm', 200),
    ('vm', 'delete', '-vm', 201, '-snapshot', '2024-03-13_14:42:47+0000'),
    ('vm', 'hold', '-vm', 201, '-snapshot', '2024-03-13_14:42:47+0000'),
    ('vm', 'release', '-vm', 201, '-snapshot', '2024-03-13_14:42:47+0000'),
])
def test_a_container_given_to_a_vm_command_is_refused_saying_it_is_one(world, cts, argv):
    before = world.state()

    result = world.run(*argv)

    assert result.code == 2, result.err
    assert error_lines(result) == [f'ERROR: CT {argv[3]} is a container, not a virtual machine: use `ct …`']
    assert world.state() == before
    assert world.files(world.vol1, argv[3]) == [f'vm-{argv[3]}-disk-0.raw']


def test_vm_create_all_never_touches_a_container(world, cts):
    result = world.run('vm', 'create', '-all', '-no-register')

    assert result.code == 0, result.err
    assert world.clones(world.vol1, 100) and world.clones(world.vol1, 101)
    assert world.files(world.vol1, 200) == ['vm-200-disk-0.raw']
    assert world.files(world.vol1, 201) == ['vm-201-disk-0.raw']
    assert world.files(world.vol2, 201) == ['vm-201-disk-1.raw']
    assert world.pve.ct(200).status == 'running'
