"""Saves the parser and completers of pve-ontap-snapshot for tab completion, at build time:

    python3 packaging/save_parser.py [TOOL_DIR] > saved_parser.py

writes the tree of commands and options that build_parser() makes, as data, and copies
the tool's completers from its source, with every function, constant and exception class
they use, so that completion.py answers a <TAB> as the tool would without importing it.
A completer that uses what cannot be copied (an object, a name imported from another
module) stops the build, saying which.
"""

import argparse
import ast
import builtins
import dis
import inspect
import os
import sys
import textwrap
import types

from completion import DEFAULT_COMPLETER


def saved_tree(parser, completer_names, path='', tree=None):
    """Each parser as data, by its command path: its actions in order, with what completion
    needs of each (flags, how many values, choices, completer, exclusive group, default)."""
    tree = {} if tree is None else tree
    groups = parser._mutually_exclusive_groups
    node = tree[path] = {'prog': parser.prog, 'groups': [group.required for group in groups], 'actions': []}
    for action in parser._actions:
        saved = {'flags': list(action.option_strings), 'dest': action.dest}
        if isinstance(action, argparse._SubParsersAction):
            saved['commands'] = list(action.choices)
            for name, child in action.choices.items():
                saved_tree(child, completer_names, f'{path} {name}'.lstrip(), tree)
        else:
            saved['nargs'] = action.nargs
            saved['choices'] = list(action.choices) if action.choices is not None else None
            saved['suppressed'] = action.help == argparse.SUPPRESS
            # A command's copy of a global option sets nothing unless given, or it would hide
            # the value given before the command.
            saved['no_default'] = action.default == argparse.SUPPRESS
            completer = getattr(action, 'completer', None)
            if completer is not None:
                saved['completer'] = completer.__name__
                completer_names.add(completer.__name__)
            saved['group'] = next((n for n, group in enumerate(groups) if action in group._group_actions), None)
        saved['required'] = action.required
        node['actions'].append({key: value for key, value in saved.items()
                                if key == 'flags' or not (value is None or value is False)})
    return tree


def global_names(source):
    """The global names a piece of source reads (its own definitions left out), each with the
    attributes read of it, or None where the name is used itself (not only as `name.attr`)."""
    code = compile(textwrap.dedent(source), '<copied>', 'exec')
    pending, found, defined = [code], {}, set()
    while pending:
        code = pending.pop()
        instructions = list(dis.get_instructions(code))
        for instruction, following in zip(instructions, instructions[1:] + [None]):
            if instruction.opname in ('LOAD_GLOBAL', 'LOAD_NAME'):
                attrs = found.setdefault(instruction.argval, set())
                if following is not None and following.opname in ('LOAD_ATTR', 'LOAD_METHOD') and attrs is not None:
                    attrs.add(following.argval)
                else:
                    found[instruction.argval] = None
            elif instruction.opname == 'STORE_NAME':     # a definition, or a class attribute
                defined.add(instruction.argval)
        pending.extend(const for const in code.co_consts if hasattr(const, 'co_code'))
    return {name: attrs for name, attrs in found.items() if name not in defined and not name.startswith('__')}


def namespace_source(cls, members):
    """The source of class `cls` (a namespace of static methods and constants) holding only `members`."""
    lines = [f'class {cls.__name__}:']
    for member in sorted(members, key=lambda name: list(vars(cls)).index(name)):
        value = vars(cls)[member]
        if isinstance(value, staticmethod) or inspect.isclass(value):
            lines += ['', inspect.getsource(getattr(value, '__func__', value)).rstrip('\n')]
        elif is_literal(value):
            lines.append(f'    {member} = {value!r}')
        else:
            raise SystemExit(f'save_parser.py: the completers use {cls.__name__}.{member}, which cannot be copied')
    return '\n'.join(lines) + '\n'


def is_literal(value):
    """Whether repr(value) is Python source that makes it again."""
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError):
        return False


def copied_definitions(tool, names):
    """(imports, constants, sources by line) of everything `names` need, from the tool. A class
    read only as a namespace (`Class.member`) is copied with just the members read."""
    imports, constants, sources, members = {}, {}, {}, {}
    pending = [(name, None) for name in names]
    while pending:
        name, attrs = pending.pop()
        if name in members and attrs is not None:
            new = attrs - members[name]
            if not new:
                continue
            members[name] |= new
            attrs = new
        elif name in imports or name in constants or name in sources and name not in members:
            continue
        if not hasattr(tool, name):
            if hasattr(builtins, name):
                continue
            raise SystemExit(f'save_parser.py: the completers use {name!r}, which {tool.__name__} does not define')
        value = getattr(tool, name)
        if isinstance(value, types.ModuleType):
            imports[name] = value.__name__
        elif inspect.isclass(value) and attrs is not None and not issubclass(value, BaseException):
            members.setdefault(name, set()).update(attrs)
            sources[name] = (inspect.getsourcelines(value)[1], None)
            for member in attrs:
                member_value = vars(value).get(member)
                if isinstance(member_value, staticmethod) or inspect.isclass(member_value):
                    source = inspect.getsource(getattr(member_value, '__func__', member_value))
                    pending.extend(global_names(source).items())
        elif inspect.isfunction(value) or inspect.isclass(value):
            if inspect.getmodule(value) is not tool:
                raise SystemExit(f'save_parser.py: the completers use {name!r}, imported into {tool.__name__}: '
                                 'import its module instead')
            members.pop(name, None)
            source, line = inspect.getsourcelines(value)
            sources[name] = (line, ''.join(source))
            pending.extend(global_names(sources[name][1]).items())
        elif is_literal(value):
            constants[name] = value
        else:
            raise SystemExit(f'save_parser.py: the completers use {name!r}, which cannot be copied')
    for name, wanted in members.items():
        sources[name] = (sources[name][0], namespace_source(getattr(tool, name), wanted))
    return imports, constants, [source for _, source in sorted(sources.values())]


def save_source(tool):
    """The source of saved_parser.py for the tool module `tool`."""
    completer_names = {DEFAULT_COMPLETER}
    tree = saved_tree(tool.build_parser(), completer_names)
    imports, constants, sources = copied_definitions(tool, sorted(completer_names))
    lines = [f'"""The parser and completers of pve-ontap-snapshot {tool.tool_version()}, saved from',
             f'{tool.__name__}.py by packaging/save_parser.py for completion.py. Generated: do not edit."""', '']
    lines += [f'import {module}' if module == name else f'import {module} as {name}'
              for name, module in sorted(imports.items())]
    lines += ['', '# Copied from the tool, with what they use.']
    lines += [f'{name} = {value!r}' for name, value in sorted(constants.items())]
    for source in sources:
        lines += ['', '', source.rstrip('\n')]
    lines += ['', '', '# The parsers that build_parser() makes, by command.', 'TREE = {']
    for path, node in tree.items():
        lines.append(f'    {path!r}: {{')
        lines += [f'        {key!r}: {value!r},' for key, value in node.items() if key != 'actions']
        lines += ["        'actions': ["] + [f'            {action!r},' for action in node['actions']] + ['        ],']
        lines.append('    },')
    lines.append('}')
    return '\n'.join(lines) + '\n'


def main(argv):
    if len(argv) > 1:
        sys.exit('usage: save_parser.py [TOOL_DIR]')
    sys.path.insert(0, argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
    import pve_ontap_snapshot
    sys.stdout.write(save_source(pve_ontap_snapshot))


if __name__ == '__main__':
    main(sys.argv[1:])
