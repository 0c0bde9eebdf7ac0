"""partition_gen.places: known cities, and the k-d tree on the sphere against a brute-force haversine search."""

from __future__ import annotations

import numpy as np
import pytest

from partition_gen.geo import haversine_km
from partition_gen.places import gazetteer, nearest_places


def test_known_cities_get_their_city_region_and_country():
    # City halls / centres, from the cities' own published coordinates.
    points = {
        "Paris, Île-de-France, France": (48.8566, 2.3522),
        "Sydney, New South Wales, Australia": (-33.8688, 151.2093),
        "Tokyo, Tokyo, Japan": (35.6895, 139.6917),
        "Nairobi, Nairobi County, Kenya": (-1.2864, 36.8172),
        "Buenos Aires, Buenos Aires F.D., Argentina": (-34.6037, -58.3816),
    }
    lat, lng = np.array(list(points.values())).T
    places = nearest_places(lat, lng)
    assert places.names() == list(points)
    assert list(places.country_code) == ["FR", "AU", "JP", "KE", "AR"]
    assert (places.distance_km < 5).all()
    assert places.record(1) == {
        "city": "Sydney", "admin1": "New South Wales", "country": "Australia", "country_code": "AU",
        "name": "Sydney, New South Wales, Australia", "distance_km": pytest.approx(places.distance_km[1], abs=1e-3),
    }  # fmt: skip


def test_nearest_is_the_great_circle_nearest_across_the_antimeridian_and_near_the_poles():
    g = gazetteer()
    rng = np.random.default_rng(0)
    # Random points, plus points where a search in raw degrees goes wrong.
    lat = np.concatenate([rng.uniform(-60, 75, 150), [-16.8, 65.6, 78.2, 71.0, -17.7]])
    lng = np.concatenate([rng.uniform(-180, 180, 150), [179.99, -168.1, 15.6, -179.9, -179.95]])
    places = nearest_places(lat, lng)
    for i in range(len(lat)):
        distances = haversine_km(lat[i], lng[i], g.lat, g.lng)
        best = int(np.argmin(distances))
        assert places.distance_km[i] == pytest.approx(distances[best], abs=1e-6), i
        assert (places.lat[i], places.lng[i]) == (g.lat[best], g.lng[best]) or distances[best] == pytest.approx(
            haversine_km(lat[i], lng[i], places.lat[i], places.lng[i]), abs=1e-6
        )
    # Fiji's Taveuni straddles 180°: the nearest place of a point just east of it is in Fiji, not 359° away.
    assert places.country_code[150] == "FJ"


def test_bad_points_are_refused_with_the_index():
    with pytest.raises(ValueError, match="point 1 is not a location"):
        nearest_places([0.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="one length"):
        nearest_places([0.0, 1.0], [0.0])
    assert len(nearest_places(np.zeros(0), np.zeros(0))) == 0
