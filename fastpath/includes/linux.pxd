# The Linux socket, byte-order, clock and aligned-allocation calls the fast path uses (only those).
# recvmmsg(2)/sendmmsg(2) need _GNU_SOURCE, which Python.h already defines.
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memset


cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    ctypedef int clockid_t
    int clock_gettime(clockid_t clk, timespec* ts)
    int CLOCK_MONOTONIC
    int CLOCK_REALTIME


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int fd, mmsghdr* msgvec, unsigned int vlen, int flags, timespec* timeout)
    int sendmmsg(int fd, mmsghdr* msgvec, unsigned int vlen, int flags)
    ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr, socklen_t addr_len)
    int AF_INET
    int AF_INET6
    int MSG_DONTWAIT
    int MSG_TRUNC


cdef extern from "<sys/socket.h>" nogil:
    # Ancillary data (cmsg(3)): the kernel's receive timestamp of each datagram (SO_TIMESTAMPNS, socket(7)).
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr* CMSG_FIRSTHDR(msghdr* msg)
    cmsghdr* CMSG_NXTHDR(msghdr* msg, cmsghdr* cmsg)
    unsigned char* CMSG_DATA(cmsghdr* cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)
    int getsockopt(int fd, int level, int optname, void* optval, socklen_t* optlen)
    int setsockopt(int fd, int level, int optname, const void* optval, socklen_t optlen)
    int SOL_SOCKET
    int SO_TIMESTAMPNS
    int SCM_TIMESTAMPNS


cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct in6_addr:
        uint8_t s6_addr[16]
    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        in6_addr sin6_addr


cdef extern from "<netinet/in.h>" nogil:
    # ip(7) IP_PKTINFO: a datagram's local address on receive, the source address to use on send.
    struct in_pktinfo:
        int ipi_ifindex
        in_addr ipi_spec_dst
        in_addr ipi_addr
    int IPPROTO_IP
    int IP_PKTINFO


cdef extern from "<sys/socket.h>" nogil:
    ssize_t sendmsg(int fd, const msghdr* msg, int flags)


cdef extern from *:
    # udp(7) segmentation offload: one sendmsg carries equal-sized datagrams to one destination (Linux 4.18+).
    """
    #include <netinet/in.h>
    #ifndef UDP_SEGMENT
    #define UDP_SEGMENT 103
    #endif
    #ifndef UDP_GRO
    #define UDP_GRO 104
    #endif
    """
    int IPPROTO_UDP
    int UDP_SEGMENT
    int UDP_GRO            # receive side (Linux 5.0+): such trains arrive as one buffer, cmsg = segment length


cdef extern from "<arpa/inet.h>" nogil:
    uint32_t htonl(uint32_t x)
    uint32_t ntohl(uint32_t x)
    uint16_t htons(uint16_t x)
    uint16_t ntohs(uint16_t x)
    int inet_pton(int af, const char* src, void* dst)
    const char* inet_ntop(int af, const void* src, char* dst, socklen_t size)
    int INET6_ADDRSTRLEN


cdef extern from "<errno.h>" nogil:
    int errno
    int EAGAIN
    int EWOULDBLOCK
    int EINTR
    int EIO
    int EINVAL
    int ENOPROTOOPT
    int EOPNOTSUPP


cdef inline long long monotonic_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000 + ts.tv_nsec // 1000000


cdef inline long long monotonic_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000 + ts.tv_nsec // 1000


cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void** memptr, size_t alignment, size_t size)


cdef inline void* zalloc_lines(size_t size) noexcept nogil:
    """Zeroed memory starting on a cache line (free() it): a struct's hot first fields then share one line."""
    cdef void* p = NULL
    if posix_memalign(&p, 64, size) != 0:
        return NULL
    memset(p, 0, size)
    return p
