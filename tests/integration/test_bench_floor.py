"""The benchmark's floor does the whole stage work each time it is asked to, also for photos
it has seen: a photo skipped as done would make the floor look faster than the stages are."""

from __future__ import annotations

import hashlib

from tests.conftest import Stack


def test_forgotten_photos_are_worked_on_again(stack: Stack) -> None:
    from pipeline.bench import Floor
    from pipeline.synth.world import make_photo

    # Given a floor that has worked on a photo
    floor = Floor(stack.settings)
    photo = make_photo(7, 0, None, 1200)
    _, found = floor.run(photo)
    sha = hashlib.sha256(photo.jpeg).hexdigest()
    assert floor.rt.ledger.get("ingest", sha) is not None
    # When it forgets, then works on the same photo again
    floor.forget()
    assert floor.rt.ledger.get("ingest", sha) is None
    _, again = floor.run(photo)
    # Then its stages ran again (each marks its photo done after its work) and found the same
    # products
    assert all(floor.rt.ledger.get(stage, sha) is not None for stage in ("ingest", "normalize"))
    assert again == found > 0
