"""Containers beside VMs: a CT id given to a vm command, or a VM id to a ct command, is refused in
one line saying which it is, and neither command tree's -all touches the other's guests."""

import pytest
from world import error_lines

STAMP = '2024-03-13_14:42:47+0000'
WRONG_KIND = {'vm': 'ERROR: CT {id} is a container, not a virtual machine: use `ct …`',
              'ct': 'ERROR: VM {id} is a virtual machine, not a container: use `vm …`'}


@pytest.mark.parametrize('argv', [
    ('vm', 'create', '-vm', 200), ('vm', 'list', '-vm', 200), ('vm', 'verify', '-vm', 200),
    ('vm', 'delete', '-vm', 201, '-snapshot', STAMP), ('vm', 'hold', '-vm', 201, '-snapshot', STAMP),
    ('vm', 'release', '-vm', 201, '-snapshot', STAMP),
    ('ct', 'create', '-ct', 100), ('ct', 'list', '-ct', 100), ('ct', 'verify', '-ct', 101),
    ('ct', 'delete', '-ct', 101, '-snapshot', STAMP), ('ct', 'hold', '-ct', 101, '-snapshot', STAMP),
    ('ct', 'release', '-ct', 101, '-snapshot', STAMP), ('ct', 'restore', '-ct', 101, '-snapshot', STAMP, '-yes'),
])
def test_a_guest_of_the_other_kind_is_refused_in_one_line_saying_which_it_is(world, cts, argv):
    before = world.state()

    result = world.run(*argv)

    assert result.code == 2, result.err
    assert error_lines(result) == [WRONG_KIND[argv[0]].format(id=argv[3])]
    assert world.state() == before
    assert not world.clones(world.vol1, argv[3]) and not world.records(world.vol1, argv[3])


def test_vm_create_all_never_touches_a_container(world, cts):
    result = world.run('vm', 'create', '-all', '-no-register')

    assert result.code == 0, result.err
    assert world.clones(world.vol1, 100) and world.clones(world.vol1, 101)
    assert world.files(world.vol1, 200) == ['vm-200-disk-0.raw']
    assert world.files(world.vol1, 201) == ['vm-201-disk-0.raw']
    assert world.files(world.vol2, 201) == ['vm-201-disk-1.raw']
    assert world.pve.ct(200).status == 'running'
