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
    """The global names a piece of source reads (its own definitions left out)."""
    code = compile(source, '<copied>', 'exec')
    pending, found, defined = [code], [], set()
    while pending:
        code = pending.pop()
        for instruction in dis.get_instructions(code):
            if instruction.opname in ('LOAD_GLOBAL', 'LOAD_NAME') and instruction.argval not in found:
                found.append(instruction.argval)
            elif instruction.opname == 'STORE_NAME':     # a definition, or a class attribute
                defined.add(instruction.argval)
        pending.extend(const for const in code.co_consts if hasattr(const, 'co_code'))
    return [name for name in found if name not in defined and not name.startswith('__')]


def is_literal(value):
    """Whether repr(value) is Python source that makes it again."""
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError):
        return False


def copied_definitions(tool, names):
    """(imports, constants, sources by line) of everything `names` need, from the tool."""
    imports, constants, sources = {}, {}, {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in imports or name in constants or name in sources:
            continue
        if not hasattr(tool, name):
            if hasattr(builtins, name):
                continue
            raise SystemExit(f'save_parser.py: the completers use {name!r}, which {tool.__name__} does not define')
        value = getattr(tool, name)
        if isinstance(value, types.ModuleType):
            imports[name] = value.__name__
        elif inspect.isfunction(value) or inspect.isclass(value):
            if inspect.getmodule(value) is not tool:
                raise SystemExit(f'save_parser.py: the completers use {name!r}, imported into {tool.__name__}: '
                                 'import its module instead')
            source, line = inspect.getsourcelines(value)
            sources[name] = (line, ''.join(source))
            pending.extend(global_names(sources[name][1]))
        elif is_literal(value):
            constants[name] = value
        else:
            raise SystemExit(f'save_parser.py: the completers use {name!r}, which cannot be copied')
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
