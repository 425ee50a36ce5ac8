"""Real meshes from Debian game and simulator data packages, in AC3D format (``ac3d.py``).

Each source is one package with one axis convention for all its models, established once by
rendering models at azimuth 0 and 90 (``tools/contact_sheets.py``) and checked per model in the
contact sheets; models whose front differs from their source's are turned in ``YAW_FIXES``.

| source | Debian package | licence | models used | axes of the files |
|---|---|---|---|---|
| flightgear_ai | flightgear-data-ai | GPL-2+ | AI aircraft, one per type | nose -x, y up |
| flightgear_models | flightgear-data-models | GPL-2+ / BSD-3 | ships (a list) | bow -x, y up |
| crrcsim | crrcsim-data | GPL-2 | model aircraft | nose +z, y up |
| torcs | torcs-data | GPL-2+ / Free Art | car bodies (no wheels) | nose +x, y up |
| flightgear_vehicles | flightgear-data-base | GPL-2+ | airport vehicles (a list) | -x, y up |

FlightGear's scenery models share the aircraft axes, but not every model follows them: the ships
used are the ones whose contact sheets show it. The licences and the attribution each requires, per
file where they differ: ``docs/datasets.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re
from collections.abc import Callable

import numpy as np

from kdpose.data import ac3d
from kdpose.data.renderer import TexturedMesh

FLIGHTGEAR_DIR = "/usr/share/games/flightgear"
CRRCSIM_DIR = "/usr/share/games/crrcsim"
TORCS_DIR = "/usr/share/games/torcs"


@dataclasses.dataclass(frozen=True)
class SourceModel:
  """One model of a source: its id, kdpose category and file."""

  object_id: str
  category: str
  path: str


@dataclasses.dataclass(frozen=True)
class MeshSource:
  """A package of AC3D models and how to use it."""

  name: str
  package: str
  licence: str
  root: str
  front: str  # axis of the files that the models' front faces, e.g. "-x".
  up: str
  categories: tuple[str, ...]
  find: Callable[[str], list[tuple[str, str]]]  # root -> [(path, category)], sorted.

  @property
  def install_hint(self) -> str:
    return f"install it with `apt-get install {self.package}`"

  def models(self) -> list[SourceModel]:
    """Every model of the source; raises with an install hint when the package is missing."""
    if not os.path.isdir(self.root):
      raise FileNotFoundError(f"No {self.name} models under {self.root}: {self.install_hint}.")
    return [SourceModel(f"{self.name}/{os.path.relpath(path, self.root)}", category, path)
            for path, category in self.find(self.root)]


def _largest(paths: list[str]) -> str:
  return max(paths, key=lambda p: (os.path.getsize(p), p))


def _flightgear_aircraft(root: str) -> list[tuple[str, str]]:
  """The largest model of each AI aircraft type (the others are LODs, lights or liveries)."""
  found = []
  for folder in sorted(glob.glob(os.path.join(root, "AI", "Aircraft", "*"))):
    if os.path.basename(folder).lower() in _NOT_AIRCRAFT:
      continue
    paths = [p for p in glob.glob(os.path.join(folder, "**", "*.ac"), recursive=True)
             if not re.search(_AIRCRAFT_PARTS, os.path.relpath(p, folder))]
    if paths:
      found.append((_largest(paths), "aeroplane"))
  return found


_NOT_AIRCRAFT = ("balloon", "ferry", "spaceshuttle", "bluebird")
# Files and folders of an aircraft's parts (lights, tanker booms...), not the airframe.
_AIRCRAFT_PARTS = (r"(?i)(^|/)(lights?|strobe|shadow|beacon|cockpit|gear|pilot|refuel|exhaust|"
                   r"droptank|navlight)")

# FlightGear's ships whose contact sheets show their bow at -x; the others carry a patch of sea,
# lie turned, or are near copies. (Its trains, buses and buildings have no consistent front.)
_FLIGHTGEAR_SHIPS = (
    "Civilian/FerryBoat1", "Civilian/LargeTrawler", "Civilian/SailBoatUnderPower",
    "Civilian/SailBoatUnderSail", "Civilian/SimpleFreighter", "Civilian/Tanker",
    "Civilian/Trawler", "Civilian/container_carrier", "Military/CG-57-high-detail/CG-57",
    "Military/CG47")


def _flightgear_ships(root: str) -> list[tuple[str, str]]:
  paths = [os.path.join(root, "Models", "Maritime", name + ".ac") for name in _FLIGHTGEAR_SHIPS]
  return [(p, "boat") for p in paths if os.path.isfile(p)]


# FlightGear's airport vehicles, one file per vehicle (most come in several liveries).
_FLIGHTGEAR_VEHICLES = {
    "car": ("EDDI-FollowMe", "airvehpickupgreen1", "hatchback_red_follow_me", "rover-aegean",
            "van-aegean", "gr_van-followme", "BFD_Sprinter_308", "ELW_Sprinter_215",
            "RTW_Sprinter_515", "fourgon-ba"),
    "bus": ("Cobus_2700s", "Cobus_3000", "groundforce_bus"),
    "truck": ("CCS_catering_truck1", "EDXW_Cateringtruck0Level_blank", "FireTruck_7.30m",
              "Fuel_Truck", "RW_GWG_MAN", "Rosenbauer_FLF_Panther8x8", "Rosenbauer_FLF_VFAEG",
              "Rosenbauer_TLF_5500", "anac-fire", "boxvan-white", "catrucklar-servair320cm",
              "catruckmed-gategourmet", "crashtender", "dicingtruck", "fedextruck-ba",
              "fire-truck-ba", "fire-truck-muc", "firetruck-K", "fueltruck1", "hoskosh-ti-1500",
              "larfueltruck-bp", "medfueltruck-asig", "medtruck-servair", "smfueltruck-gen",
              "citerne-ba", "94-f600-fuel-yellow-hi", "airvehcatgourmet1"),
}


def _flightgear_vehicles(root: str) -> list[tuple[str, str]]:
  folder = os.path.join(root, "Scenery", "Models", "Airport", "Vehicle")
  return sorted((os.path.join(folder, name + ".ac"), category)
                for category, names in _FLIGHTGEAR_VEHICLES.items() for name in names
                if os.path.isfile(os.path.join(folder, name + ".ac")))


# crrcsim's objects/ also holds scenery (trees, huts, a table): only the flying models count.
# Also left out: quadcopters and helicopters, second liveries of one airframe (PilatusB4_26,
# gap65_raven, wasabi_yr) and zagi-xs, which renders as a few loose triangles.
_CRRCSIM_SCENERY = ("populus_nigra_H", "populus_nigra_L", "table", "log", "hut", "outhouse",
                    "trashcan", "woods_terrain", "freqboard", "Fireworks_C", "copter3", "copter5",
                    "heli", "cape_cod", "davis", "qc01", "qc01_x", "PilatusB4_26", "gap65_raven",
                    "wasabi_yr", "zagi-xs")


def _crrcsim_aircraft(root: str) -> list[tuple[str, str]]:
  return [(p, "aeroplane") for p in sorted(glob.glob(os.path.join(root, "objects", "*.ac")))
          if os.path.splitext(os.path.basename(p))[0] not in _CRRCSIM_SCENERY]


def _torcs_cars(root: str) -> list[tuple[str, str]]:
  return [(os.path.join(folder, os.path.basename(folder) + ".acc"), "car")
          for folder in sorted(glob.glob(os.path.join(root, "cars", "*")))
          if os.path.isfile(os.path.join(folder, os.path.basename(folder) + ".acc"))]


SOURCES = {s.name: s for s in (
    MeshSource("flightgear_ai", "flightgear-data-ai", "GPL-2+", FLIGHTGEAR_DIR, "-x", "+y",
               ("aeroplane",), _flightgear_aircraft),
    MeshSource("flightgear_models", "flightgear-data-models",
               "GPL-2+ and BSD-3-Clause (the SAVAGE ships)", FLIGHTGEAR_DIR, "-x", "+y",
               ("boat",), _flightgear_ships),
    MeshSource("flightgear_vehicles", "flightgear-data-base", "GPL-2+", FLIGHTGEAR_DIR, "-x",
               "+y", ("bus", "car", "truck"), _flightgear_vehicles),
    MeshSource("crrcsim", "crrcsim-data", "GPL-2", CRRCSIM_DIR, "+z", "+y", ("aeroplane",),
               _crrcsim_aircraft),
    MeshSource("torcs", "torcs-data", "GPL-2+ and Free Art License", TORCS_DIR, "+x", "+y",
               ("car",), _torcs_cars),
)}

# Models whose front is not their source's, from the contact sheets: degrees to turn about z.
# These FlightGear vehicles are modelled with their front at -z (seen side-on at azimuth 0).
YAW_FIXES: dict[str, float] = {
    f"flightgear_vehicles/Scenery/Models/Airport/Vehicle/{name}.ac": 90.0 for name in (
        "airvehpickupgreen1", "fourgon-ba", "gr_van-followme", "rover-aegean", "van-aegean",
        "airvehcatgourmet1", "boxvan-white", "catrucklar-servair320cm", "catruckmed-gategourmet",
        "dicingtruck", "fedextruck-ba", "larfueltruck-bp", "medfueltruck-asig",
        "medtruck-servair", "smfueltruck-gen")}


def get(name: str) -> MeshSource:
  if name not in SOURCES:
    raise ValueError(f"Unknown mesh source {name!r}; known: {sorted(SOURCES)}.")
  return SOURCES[name]


@functools.cache
def to_kdpose(front: str, up: str) -> np.ndarray:
  """``[3, 3]`` rotation from a source's axes to kdpose's (front -y, up +z)."""
  unit = {f"{s}{a}": (1.0 if s == "+" else -1.0) * np.eye(3)[i]
          for i, a in enumerate("xyz") for s in "+-"}
  front_v, up_v = unit[front], unit[up]
  # kdpose: y = -front, z = up, x = y cross z (right-handed): the object's own left.
  y, z = -front_v, up_v
  return np.stack([np.cross(y, z), y, z])


def load_model(source_name: str, model: SourceModel) -> TexturedMesh:
  """A source model in the kdpose object frame, in the unit sphere. Raises ``ac3d.AC3DError``
  (a ``ValueError``) naming the file when it cannot be read."""
  source = get(source_name)
  mesh = ac3d.read(model.path).transformed(to_kdpose(source.front, source.up))
  if model.object_id in YAW_FIXES:
    mesh = mesh.turned(YAW_FIXES[model.object_id])
  try:
    return mesh.normalized()
  except ValueError as e:
    raise ac3d.AC3DError(f"{model.path}: {e}") from e
