"""Drives the nowpilot simulator with ServiceNow's own Python client, PySNC, used the way its
documentation shows: query, insert, update, and a journal (work notes) write read back.

Usage: pysnc_compat.py INSTANCE_URL USER PASSWORD CA_FILE
Prints one JSON object with what it observed; exits non-zero on the first surprise.
"""

import json
import sys

from pysnc import ServiceNowClient


def main():
    instance, user, password, ca_file = sys.argv[1:5]
    client = ServiceNowClient(instance, (user, password), verify=ca_file)
    seen = {}

    # Query: open incidents at priority 1-3, ordered by number, with display values.
    gr = client.GlideRecord("incident")
    gr.add_query("active", "true")
    gr.add_query("priority", "<=", "3")
    gr.order_by("number")
    gr.query()
    rows = []
    for r in gr:
        rows.append(
            {
                "number": r.get_value("number"),
                "priority": r.get_value("priority"),
                "state": r.get_display_value("state"),
            }
        )
    assert rows, "the seeded instance has open incidents at priority 1-3"
    assert rows == sorted(rows, key=lambda r: r["number"]), "ORDERBY number holds"
    assert all(int(r["priority"]) <= 3 for r in rows), rows
    assert gr.get_row_count() == len(rows), (gr.get_row_count(), len(rows))
    seen["queried"] = rows

    # Insert: impact 1 x urgency 1 must come back as priority 1 (the priority lookup).
    new = client.GlideRecord("incident")
    new.initialize()
    new.short_description = "Created by PySNC"
    new.impact = "1"
    new.urgency = "1"
    sys_id = new.insert()
    assert sys_id, "insert returned a sys_id"
    check = client.GlideRecord("incident")
    assert check.get(sys_id), "the inserted incident can be read back"
    assert check.get_value("priority") == "1", check.get_value("priority")
    assert check.get_value("number").startswith("INC"), check.get_value("number")
    seen["inserted"] = {"sys_id": str(sys_id), "number": check.get_value("number")}

    # Update: change a field and read it back.
    check.short_description = "Updated by PySNC"
    assert check.update(), "update succeeded"
    again = client.GlideRecord("incident")
    assert again.get(sys_id)
    assert again.get_value("short_description") == "Updated by PySNC"

    # Journal write: work notes read back empty on the record, and appear in sys_journal_field.
    again.work_notes = "Note written by PySNC"
    assert again.update(), "work note update succeeded"
    after = client.GlideRecord("incident")
    assert after.get(sys_id)
    assert after.get_value("work_notes") in ("", None), after.get_value("work_notes")
    journal = client.GlideRecord("sys_journal_field")
    journal.add_query("element_id", str(sys_id))
    journal.add_query("element", "work_notes")
    journal.query()
    notes = [j.get_value("value") for j in journal]
    assert notes == ["Note written by PySNC"], notes
    seen["journal"] = notes

    # A lookup by field, as GlideRecord.get(name, value) does.
    by_number = client.GlideRecord("incident")
    assert by_number.get("number", after.get_value("number"))
    assert by_number.get_value("sys_id") == str(sys_id)

    print(json.dumps(seen))


if __name__ == "__main__":
    main()
