// The MPI backend: a Communicator over MPI_COMM_WORLD for jobs started by
// mpirun (or a singleton, rank 0 of 1, without it). MPI is initialised once
// per process (MPI_THREAD_MULTIPLE requested, SERIALIZED enough: every MPI
// call of this backend holds one process-wide lock) and finalised at exit by a
// process-wide guard, after the last communicator is gone.
//
// Point to point is MPI_Isend/MPI_Irecv on private duplicates of the world
// communicator, completed by MPI_Test polling against the deadline; nothing
// calls a blocking MPI_Wait. Errors come back as statuses (MPI_ERRORS_RETURN).
// The collectives are the transport's defaults, built on isend/irecv.
//
// Peer failure: Open MPI's runtime kills the whole job when a rank dies, so
// this backend never sees a dead peer as UNAVAILABLE; survivors are killed by
// mpirun. Detecting a dead peer and carrying on is the UCX backend's job
// (under mpirun, `--mca pml ucx` puts MPI itself on UCX, but Open MPI 4.1
// still aborts the job). See transport/mpi/README.md.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "transport/communicator.h"

namespace tandem::transport {

// True when this process was started by mpirun/mpiexec or a PMI launcher
// (OMPI_COMM_WORLD_SIZE or PMI_SIZE in the environment).
bool launched_by_mpirun();

// Initialises MPI on first use and returns a communicator over every rank
// of MPI_COMM_WORLD. Collective: every rank must call it, in the same order
// relative to its other make_mpi_communicator() calls.
absl::StatusOr<std::unique_ptr<Communicator>> make_mpi_communicator();

}  // namespace tandem::transport
