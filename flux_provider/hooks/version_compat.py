"""What differs between the Airflow versions this provider supports (3.1 and later), in one place.

The rest of the package imports these names instead of testing versions itself.

* ``get_async_connection`` / ``get_async_extra_dejson``: read a connection on an event loop
  without blocking it. ``get_async_extra_dejson`` is new in
  ``apache-airflow-providers-common-compat`` 1.21.0, which needs Python 3.11: on Python 3.10 the
  newest release is 1.20.0, so the same logic is kept here for it.
* :func:`connection_form_widgets`: Airflow 3.2 and later read the connection form from the
  provider info (``conn-fields``); Airflow 3.1 asks the hook's ``get_connection_form_widgets``
  instead, which builds the same fields from that declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat import connection as _common_compat_connection
from airflow.providers.common.compat.connection import get_async_connection

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["connection_form_widgets", "get_async_connection", "get_async_extra_dejson"]


async def get_async_extra_dejson(conn: Connection) -> dict[str, Any]:
    """The connection's extra as a dict, with its secrets masked, without blocking the loop.

    Airflow 3.3.2+ masks asynchronously (``Connection.aextra_dejson``); before that the sync
    ``extra_dejson`` runs in a worker thread, where blocking on the supervisor is safe.
    """
    extras: dict[str, Any]
    upstream = getattr(_common_compat_connection, "get_async_extra_dejson", None)
    if upstream is not None:  # common-compat >= 1.21.0
        extras = await upstream(conn)
        return extras
    aextra_dejson = getattr(conn, "aextra_dejson", None)
    if aextra_dejson is not None:
        extras = await aextra_dejson()
        return extras
    from asgiref.sync import sync_to_async

    extras = await sync_to_async(lambda: conn.extra_dejson)()
    return extras


def connection_form_widgets(conn_fields: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The provider info's ``conn-fields`` as the WTForms fields Airflow 3.1 asks a hook for.

    Airflow 3.1 calls ``get_connection_form_widgets`` with ``wtforms``, ``flask_babel`` and
    ``flask_appbuilder`` replaced by stand-ins when it builds the UI's connection form (they are
    not installed without the FAB provider), and with the real ones in
    ``airflow providers widgets``. A JSON-schema ``number`` becomes an ``IntegerField``: 3.1's
    form knows strings, integers, booleans and passwords only.
    """
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import Optional

    widgets: dict[str, Any] = {}
    for name, field in conn_fields.items():
        schema = field.get("schema", {})
        types = schema.get("type", "string")
        types = [types] if isinstance(types, str) else list(types)
        options: dict[str, Any] = {
            "label": lazy_gettext(field.get("label", name)),
            "description": field.get("description", ""),
            "default": schema.get("default"),
        }
        if "null" in types:
            options["validators"] = [Optional()]
        if "boolean" in types:
            widgets[name] = BooleanField(**options)
        elif "number" in types or "integer" in types:
            widgets[name] = IntegerField(widget=BS3TextFieldWidget(), **options)
        else:
            widgets[name] = StringField(widget=BS3TextFieldWidget(), **options)
    return widgets
