# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Action walm.qemu.walm_results_file: write a results document (JSON) to a file on the controller, atomically.

ansible.builtin.copy would do it through two module runs on the controller's own connection (about 0.6-1.4 s on a
loaded host), and an evacuation writes its results file before its migrations start and as they end: in the
critical path. This writes the file in the controller's process. Documentation: plugins/modules/walm_results_file.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

ARGS = {
    "path": {"type": "path", "required": True},
    "content": {"type": "raw", "required": True},
    "mode": {"type": "str", "default": "0644"},
}


def write(path, content, mode="0644"):
    """Write content as indented, key-sorted JSON to path through a temporary file renamed over it (a reader sees
    the old document or the new one, never half of one); returns True when the file changed."""
    text = json.dumps(content, indent=4, sort_keys=True) + "\n"
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except (IOError, OSError):
        pass
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".walm-results-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, int(mode, 8))
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=ARGS)
        try:
            int(args["mode"], 8)
        except ValueError:
            raise AnsibleActionFail("walm_results_file: mode must be octal, like 0644 (got %r)" % args["mode"])
        path = args["path"]
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise AnsibleActionFail("walm_results_file: the directory of %s does not exist on the controller; "
                                    "create it or choose another path" % path)
        if self._task.check_mode:
            result.update(changed=True, path=path)
            return result
        try:
            changed = write(path, args["content"], args["mode"])
        except (IOError, OSError, TypeError, ValueError) as exc:
            raise AnsibleActionFail("walm_results_file: cannot write %s: %s" % (path, exc))
        result.update(changed=changed, path=path)
        return result
