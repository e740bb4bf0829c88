# GPAW build configuration used by scripts/setup.sh (GPAW_CONFIG): serial build against Debian's
# libxc, OpenBLAS and FFTW, measured to work on these machines (see ../shared/DESIGN.md).
compiler = "g++"
mpi = False
fftw = True
libraries = ["xc", "openblas", "fftw3"]
