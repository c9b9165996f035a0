#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: walm_results_file
short_description: Write a results document as JSON to a file on the controller
version_added: "0.2.0"
description:
  - Writes O(content) as indented JSON with sorted keys to O(path) on the controller, through a temporary file
    renamed over it, so a reader (an operator following an evacuation, a script) sees the previous document or the
    new one, never part of one.
  - An action plugin; it runs in the controller's process, whatever host the task is for. C(playbooks/evacuate_host.yml)
    writes its results file with it before the migrations start and as they end, where
    M(ansible.builtin.copy)'s two module runs would add a second or more.
options:
  path:
    description: The file on the controller. Its directory must exist.
    type: path
    required: true
  content:
    description: The document (a dict or a list).
    type: raw
    required: true
  mode:
    description: The file's permissions, in octal.
    type: str
    default: "0644"
extends_documentation_fragment:
  - walm.qemu.attributes
attributes:
  check_mode:
    support: full
    details: Writes nothing and reports C(changed=true).
notes:
  - C(changed) is false when the file already holds the same document.
author: WALM developers (@walm-project)
"""

EXAMPLES = r"""
- name: Write the results so far
  walm.qemu.walm_results_file:
    path: /var/log/walm/evacuation.json
    content: "{{ {'state': 'running', 'results': results} }}"
"""

RETURN = r"""
path:
  description: The file written.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            content=dict(type="raw", required=True),
            mode=dict(type="str", default="0644"),
        ),
        supports_check_mode=True,
    )
    module.fail_json(msg="walm.qemu.walm_results_file is an action plugin: it runs on the controller, not as a module")


if __name__ == "__main__":
    main()
