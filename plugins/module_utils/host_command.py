# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""Running a command on this host, with one clear error when it fails."""

from __future__ import absolute_import, division, print_function

import subprocess

from .errors import WalmError


def run(argv, timeout_s=60, check=True):
    """Run a host command; a failure raises WalmError with the command and its stderr."""
    try:
        # check=False: the exit code is checked below, so that the error names the command and its stderr.
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout_s,
                              universal_newlines=True, check=False)
    except FileNotFoundError:
        raise WalmError("%s is not installed on this host" % argv[0])
    except subprocess.TimeoutExpired:
        raise WalmError("'%s' did not finish within %d s" % (" ".join(argv), timeout_s))
    if check and proc.returncode != 0:
        raise WalmError("'%s' failed (exit %d): %s" % (" ".join(argv), proc.returncode,
                                                       (proc.stderr or proc.stdout).strip()))
    return proc
