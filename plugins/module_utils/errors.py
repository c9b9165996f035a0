# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The one exception type WALM's module_utils raise for problems an operator must act on."""

from __future__ import absolute_import, division, print_function


class WalmError(Exception):
    """An error whose message is meant for the operator: it says what is wrong and how to fix it."""

    def __init__(self, message, **details):
        super(WalmError, self).__init__(message)
        self.message = message
        #: extra structured data for the module result (e.g. the VM's state after a failed migration)
        self.details = details
