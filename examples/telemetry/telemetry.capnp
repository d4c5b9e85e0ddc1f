# Telemetry samples that one cell publishes to another over a cellink
# channel, built in place in a loaned ring record and read in place
# (linux-uio/include/cellink/linux-uio/capnp_message.hpp).
#
# Evolve it the Cap'n Proto way: add fields with the next ordinal, never
# renumber or change a field's type. A reader of an older schema skips the
# new fields; a reader of a newer one sees their defaults.
@0x815479523b95ca1b;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cellink::examples::telemetry");

enum Status {
  ok @0;
  degraded @1;   # running, but at least one reading is out of range
  fault @2;      # the component stopped reporting valid readings
}

struct Sample {
  sequence @0 :UInt64;       # per publisher, +1 per sample; a gap means loss
  timestampNs @1 :UInt64;    # CLOCK_MONOTONIC of the publishing cell
  cell @2 :Text;             # the publishing cell's name
  temperatures @3 :List(Float32);  # degrees Celsius, one per sensor
  status @4 :Status;
  components @5 :List(Sample);     # the samples of this cell's parts (board, sensor, ...)
}
